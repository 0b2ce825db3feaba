package janitor

// PageQuery is the statement that walks a barrier table, for the test that
// EXPLAINs it.
func PageQuery(table string) string { return pageQuery(table) }
