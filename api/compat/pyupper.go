package compat

import (
	"golang.org/x/text/cases"
	"golang.org/x/text/language"
)

// pyUpper is Python's str.upper(), which is how Vigrid upper-cased a kill
// signal's name: Unicode's full case mapping, where one character may
// become several (ß is SS, the ligature ﬁ is FI, ŉ is ʼN, ᾳ is ΑΙ), with
// no locale (ı and i are both I). strings.ToUpper maps each character to
// one and left ß, ﬁ and a hundred others as they were, so the name a 400
// echoed was not Vigrid's. A Caser keeps state: one per call.
func pyUpper(s string) string {
	return cases.Upper(language.Und).String(s)
}
