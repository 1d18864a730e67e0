package client

import (
	"fmt"
	"reflect"
	"strings"
	"unicode/utf8"
)

// checkSendable refuses, before anything is sent, a request that would
// not reach the API as the caller wrote it. encoding/json writes U+FFFD
// for each byte of a string that is not UTF-8, so an argument or an env
// value with such bytes ran on the host as other text (another file's
// name); net/http refuses a header with a line end at every attempt, as
// a transport error that Temporary calls worth retrying.
func checkSendable(r request) error {
	for k, vs := range r.header {
		for _, v := range vs {
			if hasControl(v) {
				return fmt.Errorf("%s %q holds a line end or another control character, which no request can carry", k, v)
			}
		}
	}
	if r.body == nil {
		return nil
	}
	if field := notUTF8(reflect.ValueOf(r.body), ""); field != "" {
		return fmt.Errorf("%s is not valid UTF-8, which a JSON request cannot carry (its bad bytes would arrive as U+FFFD); send bytes as standard input, which is encoded", field)
	}
	return nil
}

// hasControl reports a control character other than a tab, which an
// HTTP header cannot hold.
func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f })
}

// notUTF8 returns the JSON path (args[1], env.NAME) of the first string
// in v that is not valid UTF-8, or "". []byte is skipped: JSON carries it
// as base64.
func notUTF8(v reflect.Value, path string) string {
	switch v.Kind() {
	case reflect.String:
		if !utf8.ValidString(v.String()) {
			return path
		}
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			return notUTF8(v.Elem(), path)
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return ""
		}
		for i := range v.Len() {
			if p := notUTF8(v.Index(i), fmt.Sprintf("%s[%d]", path, i)); p != "" {
				return p
			}
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			k := fmt.Sprint(it.Key().Interface())
			if !utf8.ValidString(k) {
				return fmt.Sprintf("the name %q in %s", k, path)
			}
			if p := notUTF8(it.Value(), joinPath(path, k)); p != "" {
				return p
			}
		}
	case reflect.Struct:
		for i := range v.NumField() {
			f := v.Type().Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if p := notUTF8(v.Field(i), joinPath(path, name)); p != "" {
				return p
			}
		}
	}
	return ""
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}
