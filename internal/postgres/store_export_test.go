package postgres

// OpenTweaked exports open to the tests.
var OpenTweaked = open
