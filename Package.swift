// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "UVBind",
    products: [
        .library(name: "UVBind", targets: ["UVBind"]),
        // The same library for C hosts: `make` links it with the Swift standard
        // library inside and installs it as libUVBind.so (see the Makefile).
        .library(name: "UVBindC", type: .dynamic, targets: ["UVBind"]),
        .executable(name: "directd", targets: ["directd"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // libuv, as the system provides it (Debian: libuv1-dev).
        .systemLibrary(
            name: "CUV",
            path: "Modules/CUV",
            pkgConfig: "libuv",
            providers: [.apt(["libuv1-dev"])]
        ),
        // The C API's header, implemented by UVBind with @c @implementation.
        .systemLibrary(name: "CUVBind", path: "Modules/UVBind"),
        // prctl(2) and capset(2) for dropping root (header-only: glibc's are variadic).
        .systemLibrary(name: "CPrivilege", path: "Modules/CPrivilege"),
        // The bind core. Depends on libuv and the standard library only: C hosts link it.
        .target(name: "UVBind", dependencies: ["CUV", "CUVBind"]),
        .executableTarget(
            name: "directd",
            dependencies: [
                "UVBind", "CUV", "CPrivilege",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "UVBindTests", dependencies: ["UVBind", "CUV"]),
        .testTarget(name: "directdTests", dependencies: ["directd"]),
    ],
    swiftLanguageModes: [.v6]
)
