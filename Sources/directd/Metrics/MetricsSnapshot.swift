/// What a scrape reads besides the event counters: levels that are simply
/// looked at (pools, descriptors, the log's totals). Taken on the loop, at the
/// scrape, in constant time (no walk over the sessions).
struct MetricsSnapshot {
    var version: String
    var relayMode: String
    var buffersInUse = 0
    var buffersLimit = 0
    var connectionsWaitingForBuffers = 0
    var pipesInUse = 0
    var pipesOpen = 0
    var descriptorsUsed = 0
    var descriptorLimit = 0
    var logLinesDropped = 0
    var logLinesSuppressed = 0
    var journalEntriesDropped = 0
}
