package netstack

// GROMerged is how many received packets n's link has merged into others,
// for the external tests.
func GROMerged(n *Node) uint64 { return groMerged(n) }

// BulkSize is how much each direction of a bulk test moves (see bulkSize).
func BulkSize() int64 { return bulkSize() }
