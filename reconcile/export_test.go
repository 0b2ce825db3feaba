package reconcile

// SplitMinSize lets the external tests read small files in parts.
var SplitMinSize = &splitMinSize
