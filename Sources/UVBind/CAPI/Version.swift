import CUVBind

/// The library's version, "MAJOR.MINOR.PATCH", from `uvbind.h`'s macros: the one
/// source that the C API, the pkg-config file and `directd --version` share.
public let uvbindVersion = "\(UVBIND_VERSION_MAJOR).\(UVBIND_VERSION_MINOR).\(UVBIND_VERSION_PATCH)"
