import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import directd

/// What `user` and `group` decide, for a given starting uid (no drop here).
struct PrivilegePlanTests {
    static func settings(_ options: [String: String]) throws -> Settings {
        var settings = Settings()
        for (name, value) in options.sorted(by: { $0.key < $1.key }) { try settings.set(name, value) }
        return settings
    }

    static let nobody = Account.user(named: "nobody")

    @Test(.enabled(if: nobody != nil, "needs the user nobody"))
    func rootWithAUserDropsToItAndItsPrimaryGroup() throws {
        let nobody = try #require(Self.nobody)
        let plan = try PrivilegePlan(Self.settings(["user": "nobody", "direct-access-port": "21118"]), effectiveUID: 0)
        guard case .drop(let user, let group, let keep) = plan else {
            Issue.record("\(plan)")
            return
        }
        #expect(user == nobody)
        #expect(group.gid == nobody.gid, "group defaults to the user's primary group")
        #expect(!keep, "no capability for a port above 1023")
        #expect(plan.warning == nil)
        #expect(plan.summary?.contains("capabilities then: none") == true)
    }

    @Test(.enabled(if: nobody != nil, "needs the user nobody"), arguments: [("80", true), ("1023", true), ("1024", false), ("0", false)])
    func bindServiceIsKeptOnlyForAPortBelow1024(_ port: String, keeps: Bool) throws {
        let plan = try PrivilegePlan(Self.settings(["user": "nobody", "direct-access-port": port]), effectiveUID: 0)
        guard case .drop(_, _, let keep) = plan else {
            Issue.record("\(plan)")
            return
        }
        #expect(keep == keeps)
    }

    @Test(.enabled(if: nobody != nil, "needs the user nobody"))
    func socketsFromTheServiceManagerNeedNoCapability() throws {
        let plan = try PrivilegePlan(Self.settings(["user": "nobody", "direct-access-port": "80"]), effectiveUID: 0)
        guard case .drop(_, _, true) = plan, case .drop(_, _, false) = plan.forInheritedSockets else {
            Issue.record("\(plan) / \(plan.forInheritedSockets)")
            return
        }
        #expect(PrivilegePlan.stayRoot.forInheritedSockets == .stayRoot)
    }

    @Test func rootWithoutAUserWarnsThatItServesAsRoot() throws {
        let plan = try PrivilegePlan(Settings(), effectiveUID: 0)
        #expect(plan == .stayRoot)
        #expect(plan.warning?.contains("directd will serve as root") == true)
    }

    @Test(.enabled(if: nobody != nil, "needs the user nobody"))
    func aUserForAProcessThatIsNotRootChangesNothingAndSaysSo() throws {
        let plan = try PrivilegePlan(Self.settings(["user": "nobody"]), effectiveUID: 1000)
        #expect(plan == .notRoot(uid: 1000, ignoredUser: "nobody"))
        #expect(plan.warning?.contains("applies only when directd starts as root") == true)
        #expect(try PrivilegePlan(Settings(), effectiveUID: 1000).warning == nil, "DynamicUser=: nothing to say")
    }

    @Test func unknownNamesAndAGroupAloneAreConfigurationErrors() throws {
        var settings = Settings()
        #expect(throws: ConfigError.self) { try settings.set("user", "no-such-user-directd") }
        #expect(throws: ConfigError.self) { try settings.set("group", "no-such-group-directd") }
        do {
            try settings.set("user", "no-such-user-directd")
        } catch {
            #expect(error.description == "Invalid user \"no-such-user-directd\": no such user on this system")
        }
        if let root = Account.group(named: "root") {
            try settings.set("group", root.name)
            #expect(throws: ConfigError.self) { try PrivilegePlan(settings, effectiveUID: 0) }
        }
        var rootUser = Settings()
        try rootUser.set("user", "root")
        #expect(throws: ConfigError.self) { try PrivilegePlan(rootUser, effectiveUID: 0) }
    }

    @Test func aReloadToANewLowPortNeedsTheCapabilityThatWasKept() throws {
        var current = Settings(), low = Settings(), high = Settings()
        try current.set("direct-access-port", "8080")
        try low.set("direct-access-port", "81")
        try high.set("direct-access-port", "8081")
        let dropped = Privileges(droppedTo: "nobody", keepsBindService: false)
        let refusal = try #require(dropped.reloadRefusal(low, from: current))
        #expect(refusal.contains("direct-access-port 81") && refusal.contains("CAP_NET_BIND_SERVICE")
                && refusal.contains("nobody"))
        #expect(dropped.reloadRefusal(high, from: current) == nil)
        #expect(Privileges(droppedTo: "nobody", keepsBindService: true).reloadRefusal(low, from: current) == nil)
        #expect(Privileges.asStarted.reloadRefusal(low, from: current) == nil, "not dropped: the bind says")
    }
}
