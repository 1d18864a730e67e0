package compat

import (
	"strings"
	"testing"
)

// TestPyStr: the cases are Python 3.11's str(json.loads(raw)): ints exact
// at any size, floats as repr writes them, strings inside containers as
// repr quotes them, dicts in document order with a repeated key's first
// place and last value.
func TestPyStr(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		// The reviewer's: the items of the arguments [1e3,1.50,-0,[1,"a"],{"a":1}],
		// and a command sent as ["echo"].
		{`1e3`, `1000.0`},
		{`1.50`, `1.5`},
		{`-0`, `0`},
		{`[1,"a"]`, `[1, 'a']`},
		{`{"a":1}`, `{'a': 1}`},
		{`["echo"]`, `['echo']`},
		{`"echo"`, `echo`},
		{`"  echo "`, `  echo `},
		{`true`, `True`},
		{`false`, `False`},
		{`null`, `None`},
		{`0`, `0`},
		{`42`, `42`},
		{`-17`, `-17`},
		{`123456789012345678901234567890`, `123456789012345678901234567890`},
		{`-123456789012345678901234567890`, `-123456789012345678901234567890`},
		{`1.0`, `1.0`},
		{`-0.0`, `-0.0`},
		{`0.0`, `0.0`},
		{`0e0`, `0.0`},
		{`-0e5`, `-0.0`},
		{`1E3`, `1000.0`},
		{`1e+3`, `1000.0`},
		{`2.5e-3`, `0.0025`},
		{`0.1`, `0.1`},
		{`0.0001`, `0.0001`},
		{`0.00001`, `1e-05`},
		{`1e-05`, `1e-05`},
		{`123456789.123456789`, `123456789.12345679`},
		{`1e15`, `1000000000000000.0`},
		{`1e16`, `1e+16`},
		{`9999999999999999.0`, `1e+16`},
		{`1234567890123456.7`, `1234567890123456.8`},
		{`1e22`, `1e+22`},
		{`1.5e300`, `1.5e+300`},
		{`1e308`, `1e+308`},
		{`1.7976931348623157e308`, `1.7976931348623157e+308`},
		{`1e309`, `inf`},
		{`1e400`, `inf`},
		{`-1e400`, `-inf`},
		{`1e-400`, `0.0`},
		{`-1e-400`, `-0.0`},
		{`5e-324`, `5e-324`},
		{`2.2250738585072014e-308`, `2.2250738585072014e-308`},
		{`0.30000000000000004`, `0.30000000000000004`},
		{`100.0`, `100.0`},
		{`12345678901234567890.0`, `1.2345678901234567e+19`},
		{`3.14159`, `3.14159`},
		{`-2.5E+10`, `-25000000000.0`},
		{`1e-4`, `0.0001`},
		{`0.00012`, `0.00012`},
		{`[]`, `[]`},
		{`{}`, `{}`},
		{`[1e3,1.50,-0,[1,"a"],{"a":1}]`, `[1000.0, 1.5, 0, [1, 'a'], {'a': 1}]`},
		{`[true,false,null]`, `[True, False, None]`},
		{`{"a":{"b":[1,{"c":null}]},"d":"e"}`, `{'a': {'b': [1, {'c': None}]}, 'd': 'e'}`},
		{`  [ 1 , 2 ]  `, `[1, 2]`},
		{`{"a":1,"b":2,"a":3}`, `{'a': 3, 'b': 2}`},
		{`{"b":1,"a":2,"b":3,"c":{"x":1,"x":[2]}}`, `{'b': 3, 'a': 2, 'c': {'x': [2]}}`},
		{`{"":""}`, `{'': ''}`},
		{`["it's"]`, `["it's"]`},
		{`["say \"hi\""]`, `['say "hi"']`},
		{`["it's \"both\""]`, `['it\'s "both"']`},
		{`["back\\slash"]`, `['back\\slash']`},
		{`["tab\tnl\ncr\r"]`, `['tab\tnl\ncr\r']`},
		{`["\u0000\u0001\u001f\u007f"]`, `['\x00\x01\x1f\x7f']`},
		{`["\u0080\u009f\u00a0\u00ad\u00e9"]`, "['\\x80\\x9f\\xa0\\xad\u00e9']"},
		{`["\u2028\u2029\u200b\u3000\ufeff"]`, `['\u2028\u2029\u200b\u3000\ufeff']`},
		{`["\ue000\uffff\ufffd"]`, "['\\ue000\\uffff\ufffd']"},
		{`["\ud83d\ude00"]`, "['\U0001f600']"},
		{`["\udb40\udc01"]`, `['\U000e0001']`},
		{`["\udb80\udc00"]`, `['\U000f0000']`},
		{`[" "]`, `[' ']`},
		{`["\u000b\u000c"]`, `['\x0b\x0c']`},
		{`{"k'":"v\""}`, `{"k'": 'v"'}`},
		{`"\u0000 top\nlevel"`, "\x00 top\nlevel"},
		{`[[[]],{}]`, `[[[]], {}]`},
		{`[-0.0, -0, 0]`, `[-0.0, 0, 0]`},
		{`[1.0e0]`, `[1.0]`},
		{`"\ud83d\ude00 top"`, "\U0001f600 top"},
		{`["\u00e9\u65e5\ud83d\ude00"]`, "['\u00e9\u65e5\U0001f600']"},
		{`12345678901234567890123456789012345678901234567890e0`, `1.2345678901234567e+49`},
		{`-123.456e-7`, `-1.23456e-05`},
		{`[1e400,-1e400]`, `[inf, -inf]`},
		{`{"a":"x","a":"y","b":"z","a":"w"}`, `{'a': 'w', 'b': 'z'}`},
	} {
		if got := pyStr([]byte(tc.raw)); got != tc.want {
			t.Errorf("pyStr(%s) = %q, want %q", tc.raw, got, tc.want)
		}
	}
}

// TestPyIntsFit: json.loads raises for an integer longer than 4300 digits,
// anywhere in the body, and takes a float of any length.
func TestPyIntsFit(t *testing.T) {
	digits := func(n int) string { return "1" + strings.Repeat("0", n-1) }
	for raw, want := range map[string]bool{
		`{"command":"echo","arguments":[` + digits(4300) + `]}`:   true,
		`{"command":"echo","arguments":[-` + digits(4300) + `]}`:  true,
		`{"command":"echo","arguments":[` + digits(4301) + `]}`:   false,
		`{"command":"echo","arguments":[-` + digits(4301) + `]}`:  false,
		`{"command":"echo","other":{"x":[` + digits(4301) + `]}}`: false,
		`{"command":"echo","timeout":` + digits(4301) + `}`:       false,
		`{"command":"echo","arguments":[` + digits(5000) + `.5]}`: true,
		`{"command":"echo","arguments":[` + digits(5000) + `e0]}`: true,
		`{"command":"` + digits(5000) + `"}`:                      true,
	} {
		if got := pyIntsFit([]byte(raw)); got != want {
			t.Errorf("pyIntsFit(%.60s…) = %v, want %v", raw, got, want)
		}
	}
}
