package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/toml/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/v2"
)

// EnvPrefix starts every environment variable Load reads. The rest of the
// name is the key path in upper case with "__" between sections, so
// ORDERLY_NATS__URL sets nats.url and ORDERLY_DATA_DIR sets data_dir.
const EnvPrefix = "ORDERLY_"

// Loaded records where a Config came from, so a reload can repeat exactly
// the same steps and integrity checks can compare the file against it.
type Loaded struct {
	// Path is the config file, or "" when only env, flags and defaults apply.
	Path string
	// SHA256 is the hex SHA-256 of the file bytes that were parsed (not of
	// a second read, which could differ); "" without a file.
	SHA256 string
	// Overrides are the flag values (koanf paths such as "nats.url") that
	// win over everything and are applied again on every reload.
	Overrides map[string]any
	// Empty is set when the file parsed to no settings at all (empty, only
	// comments, or only keys with no value). At startup that means
	// defaults; a reload refuses it unless the running file was empty too,
	// since a truncated file must not silently drop the security setup.
	Empty bool
}

// Load builds a Config from defaults, then the file at path (YAML for .yaml
// and .yml, TOML for .toml; "" for none), then ORDERLY_* variables from
// environ, then overrides, each layer winning over the ones before. A key
// the Config does not have is an error naming it: in a security
// configuration a typo must never silently fall back to a default. Load
// does not validate; call Validate on the result.
func Load(path string, environ []string, overrides map[string]any) (Config, Loaded, error) {
	l := Loaded{Path: path, Overrides: maps.Clone(overrides)}
	if path == "" {
		cfg, err := build(nil, environ, overrides)
		if err != nil {
			return Config{}, l, fmt.Errorf("load config: %w", err)
		}
		return cfg, l, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, l, fmt.Errorf("load config: %w", err)
	}
	l.SHA256 = hashBytes(data)
	cfg, empty, err := buildFile(path, data, environ, overrides)
	l.Empty = empty
	return cfg, l, err
}

// buildFile parses data as the file at path and layers env and overrides
// on top. It is Load without the read, so the drift check can judge the
// exact bytes it hashed. empty reports a file that set nothing.
func buildFile(path string, data []byte, environ []string, overrides map[string]any) (cfg Config, empty bool, err error) {
	var file map[string]any
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".yaml", ".yml":
		file, err = yaml.Parser().Unmarshal(data)
	case ".toml":
		file, err = toml.Parser().Unmarshal(data)
	default:
		return Config{}, false, fmt.Errorf("load config %s: unsupported extension %q (use .yaml, .yml or .toml)", path, ext)
	}
	if err != nil {
		return Config{}, false, fmt.Errorf("load config %s: parse: %w", path, err)
	}
	if file == nil {
		file = map[string]any{} // an empty file is valid: defaults apply
	}
	var unknown []string
	file = stringKeys(file).(map[string]any)
	checkKeys(file, reflect.TypeFor[Config](), "", &unknown)
	if len(unknown) > 0 {
		return Config{}, false, fmt.Errorf("load config %s: unknown keys: %s", path, strings.Join(unknown, ", "))
	}
	empty = setsNothing(file)
	if err := normalize(file); err != nil {
		return Config{}, empty, fmt.Errorf("load config %s: %w", path, err)
	}
	cfg, err = build(file, environ, overrides)
	if err != nil {
		return Config{}, empty, fmt.Errorf("load config %s: %w", path, err)
	}
	return cfg, empty, nil
}

// build merges the layers over Default and decodes them.
func build(file map[string]any, environ []string, overrides map[string]any) (Config, error) {
	env, err := envLayer(environ)
	if err != nil {
		return Config{}, err
	}
	flags, err := overrideLayer(overrides)
	if err != nil {
		return Config{}, err
	}
	k := koanf.New(".")
	for _, layer := range []map[string]any{file, env, flags} {
		if len(layer) == 0 {
			continue
		}
		if err := k.Load(confmap.Provider(layer, ""), nil); err != nil {
			return Config{}, err
		}
	}
	cfg := Default()
	dc := &mapstructure.DecoderConfig{
		DecodeHook: mapstructure.ComposeDecodeHookFunc(durationHook, scalarHook),
		// ZeroFields makes a list in a higher layer replace the default
		// list instead of being merged into it element by element.
		ZeroFields:  true,
		ErrorUnused: true,
		TagName:     "koanf",
	}
	if err := k.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{Tag: "koanf", DecoderConfig: dc}); err != nil {
		return Config{}, decodeError(err)
	}
	return cfg, nil
}

// decodeError rewrites mapstructure's multi-line report as one line of
// "key: problem" pairs, the same shape as ValidationError.
func decodeError(err error) error {
	var parts []string
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		if de, ok := e.(*mapstructure.DecodeError); ok {
			if inner := de.Unwrap(); inner != nil {
				if _, joined := inner.(interface{ Unwrap() []error }); joined {
					walk(inner)
					return
				}
				parts = append(parts, de.Name()+": "+inner.Error())
				return
			}
		}
		if inner := errors.Unwrap(e); inner != nil {
			walk(inner)
			return
		}
		parts = append(parts, e.Error())
	}
	walk(err)
	return errors.New(strings.Join(parts, "; "))
}

// hashBytes returns the hex SHA-256 of b.
func hashBytes(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// stringKeys converts the map[any]any YAML produces for non-string keys
// into map[string]any, recursively, so every layer has one shape.
func stringKeys(v any) any {
	switch m := v.(type) {
	case map[string]any:
		for k, x := range m {
			m[k] = stringKeys(x)
		}
		return m
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, x := range m {
			out[fmt.Sprint(k)] = stringKeys(x)
		}
		return out
	case []any:
		for i, x := range m {
			m[i] = stringKeys(x)
		}
		return m
	}
	return v
}

// checkKeys appends to unknown every key of m that type t has no field
// for, with its full path, and removes null values so that "key:" with
// nothing after it means "not set" rather than "zero".
func checkKeys(m map[string]any, t reflect.Type, prefix string, unknown *[]string) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		f, ok := field(t, k)
		if !ok {
			*unknown = append(*unknown, prefix+k)
			continue
		}
		if v == nil {
			delete(m, k)
			continue
		}
		switch {
		case isSection(f.Type):
			if sub, ok := v.(map[string]any); ok {
				checkKeys(sub, f.Type, prefix+k+".", unknown)
			}
		case f.Type.Kind() == reflect.Slice && isSection(f.Type.Elem()):
			if list, ok := v.([]any); ok {
				for i, e := range list {
					if sub, ok := e.(map[string]any); ok {
						checkKeys(sub, f.Type.Elem(), fmt.Sprintf("%s%s[%d].", prefix, k, i), unknown)
					}
				}
			}
		}
	}
}

// setsNothing reports whether v, after checkKeys dropped the keys with no
// value, is only (nested) empty sections.
func setsNothing(v any) bool {
	m, ok := v.(map[string]any)
	if !ok {
		return false
	}
	for _, x := range m {
		if !setsNothing(x) {
			return false
		}
	}
	return true
}

// normalize accepts the Vigrid form of worker.forbidden_chars, a list of
// one-character strings, which avoids quoting backslashes and quotes, and
// refuses Vigrid's form of worker.command_path, one colon-separated
// string, naming it and the list it stands for: a directory is no secret,
// unlike the values the decoder's "not a single value" keeps to itself.
func normalize(file map[string]any) error {
	w, ok := file["worker"].(map[string]any)
	if !ok {
		return nil
	}
	if s, ok := w["command_path"].(string); ok {
		dirs := strings.FieldsFunc(s, func(r rune) bool { return r == ':' })
		return fmt.Errorf("worker.command_path: %q is a single value, not a list: write [%s], one directory an entry", s, strings.Join(dirs, ", "))
	}
	list, ok := w["forbidden_chars"].([]any)
	if !ok {
		return nil
	}
	var b strings.Builder
	for i, e := range list {
		s, ok := e.(string)
		if !ok || len([]rune(s)) != 1 {
			return fmt.Errorf("worker.forbidden_chars[%d]: want a single character, got %v", i, e)
		}
		b.WriteString(s)
	}
	w["forbidden_chars"] = b.String()
	return nil
}

// field finds the struct field of t whose koanf tag is key.
func field(t reflect.Type, key string) (reflect.StructField, bool) {
	if t.Kind() != reflect.Struct {
		return reflect.StructField{}, false
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Tag.Get("koanf") == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// isSection reports whether t is a nested table of keys rather than a value.
func isSection(t reflect.Type) bool { return t.Kind() == reflect.Struct }

// lookup walks a key path through the Config type and returns the type of
// the value it names.
func lookup(path []string) (reflect.Type, error) {
	t := reflect.TypeFor[Config]()
	for i, p := range path {
		f, ok := field(t, p)
		if !ok {
			return nil, fmt.Errorf("unknown key %q", strings.Join(path[:i+1], "."))
		}
		t = f.Type
	}
	return t, nil
}

// setPath stores v in the nested map m under path, creating sections.
func setPath(m map[string]any, path []string, v any) {
	for _, p := range path[:len(path)-1] {
		sub, ok := m[p].(map[string]any)
		if !ok {
			sub = map[string]any{}
			m[p] = sub
		}
		m = sub
	}
	m[path[len(path)-1]] = v
}

// envLayer turns ORDERLY_* entries of environ into a nested map. A name
// with "__" must name a key; a name without is ignored unless it names a
// top-level key, because ORDERLY_URL and ORDERLY_TOKEN belong to the
// client commands and share the prefix.
func envLayer(environ []string) (map[string]any, error) {
	out := map[string]any{}
	var errs []error
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		rest := strings.ToLower(strings.TrimPrefix(name, EnvPrefix))
		path := strings.Split(rest, "__")
		if slices.Contains(path, "") {
			errs = append(errs, fmt.Errorf("%s: malformed name (sections are separated by __)", name))
			continue
		}
		t, err := lookup(path)
		if err != nil {
			if len(path) == 1 {
				continue
			}
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		v, err := fromString(value, t)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		setPath(out, path, v)
	}
	return out, errors.Join(errs...)
}

// overrideLayer turns flag overrides keyed by koanf path into a nested map.
// String values are converted like environment values, so a flag layer may
// pass what the user typed.
func overrideLayer(overrides map[string]any) (map[string]any, error) {
	out := map[string]any{}
	var errs []error
	for _, key := range slices.Sorted(maps.Keys(overrides)) {
		v := overrides[key]
		if v == nil {
			continue
		}
		path := strings.Split(key, ".")
		t, err := lookup(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("override: %w", err))
			continue
		}
		if s, ok := v.(string); ok {
			if v, err = fromString(s, t); err != nil {
				errs = append(errs, fmt.Errorf("override %s: %w", key, err))
				continue
			}
		} else if isSection(t) {
			errs = append(errs, fmt.Errorf("override %s: is a section; set its keys one by one", key))
			continue
		}
		setPath(out, path, v)
	}
	return out, errors.Join(errs...)
}

// fromString converts an environment or flag string to the value type t.
// Lists are comma-separated; a list of sections or a map cannot be set
// this way.
func fromString(s string, t reflect.Type) (any, error) {
	if t == reflect.TypeFor[time.Duration]() {
		return ParseDuration(s)
	}
	switch t.Kind() {
	case reflect.String:
		return s, nil
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return nil, errors.New("not a boolean (use true or false)")
		}
		return b, nil
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, t.Bits())
		if err != nil {
			return nil, errors.New("not an integer")
		}
		return n, nil
	case reflect.Slice:
		if t.Elem().Kind() != reflect.String {
			return nil, errors.New("a list of tables can only be set in the config file")
		}
		list := []string{}
		for _, e := range strings.Split(s, ",") {
			if e = strings.TrimSpace(e); e != "" {
				list = append(list, e)
			}
		}
		return list, nil
	case reflect.Map:
		return nil, errors.New("a map can only be set in the config file")
	case reflect.Struct:
		return nil, errors.New("is a section; set its keys with SECTION__KEY")
	}
	return nil, fmt.Errorf("unsupported type %s", t)
}

// durationHook decodes duration strings with ParseDuration and refuses
// bare numbers, which would otherwise silently mean nanoseconds.
func durationHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeFor[time.Duration]() || from == to {
		return data, nil
	}
	switch v := data.(type) {
	case string:
		return ParseDuration(v)
	case int, int64, uint64, float64:
		if reflect.ValueOf(v).IsZero() {
			return time.Duration(0), nil
		}
		return nil, fmt.Errorf("%v has no unit; write a duration such as 30s, 5m, 2h or 90d", v)
	}
	return data, nil
}

// scalarHook refuses what the decoder would otherwise convert or report in
// Go's words: a fraction for a whole number (decoded, it would be cut:
// max_args: 2.7 meant 2), and text or true/false for a number or a flag.
// The value is not repeated: a misplaced secret must not reach a log.
func scalarHook(from, to reflect.Type, data any) (any, error) {
	if to == reflect.TypeFor[time.Duration]() {
		return data, nil
	}
	switch to.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		// YAML reads a whole number past int64 as a uint64 or a float64,
		// which the decoder would wrap into a negative one.
		signed := to.Kind() >= reflect.Int && to.Kind() <= reflect.Int64
		switch v := data.(type) {
		case float64:
			if v != math.Trunc(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("%v is not a whole number", v)
			}
			if lim := math.Ldexp(1, to.Bits()-1); signed && (v < -lim || v >= lim) {
				// The bounds as integers: 2^63 itself is no int64.
				max := int64(math.MaxInt64 >> (64 - to.Bits()))
				return nil, fmt.Errorf("%v is out of range (%d to %d)", v, -max-1, max)
			}
		case uint64:
			if max := uint64(math.MaxInt64) >> (64 - to.Bits()); signed && v > max {
				return nil, fmt.Errorf("%v is out of range (at most %d)", v, max)
			}
		case string:
			return nil, errors.New("must be a whole number, not text")
		case bool:
			return nil, errors.New("must be a whole number, not true or false")
		}
	case reflect.Float32, reflect.Float64:
		switch data.(type) {
		case string:
			return nil, errors.New("must be a number, not text")
		case bool:
			return nil, errors.New("must be a number, not true or false")
		}
	case reflect.Bool:
		switch data.(type) {
		case string, int, int64, uint64, float64:
			return nil, errors.New("must be true or false")
		}
	case reflect.Slice:
		// The decoder's "source data must be an array or slice, got
		// string" is Go's; a Vigrid user writes command_path as its
		// colon-separated string, and a list of one table is easily
		// written without its "- ".
		switch data.(type) {
		case string, bool, int, int64, uint64, float64:
			return nil, errors.New("must be a list, [a, b] or one \"- item\" line each, not a single value")
		case map[string]any:
			return nil, errors.New("must be a list, one \"- \" entry each, not a table of keys")
		}
	case reflect.Struct, reflect.Map:
		switch data.(type) {
		case []any:
			return nil, errors.New("must be a table of keys (key: value lines), not a list")
		}
	}
	return data, nil
}

// ParseDuration is time.ParseDuration plus a leading whole-days part, so
// retention can be written "90d" or "1d12h" as operators expect.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	days, rest, ok := strings.Cut(s, "d")
	if !ok {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q (use e.g. 30s, 5m, 2h or 90d)", s)
		}
		return d, nil
	}
	neg := strings.HasPrefix(days, "-")
	n, err := strconv.ParseUint(strings.TrimPrefix(days, "-"), 10, 63)
	if err != nil || strings.HasPrefix(rest, "-") || strings.HasPrefix(rest, "+") {
		return 0, fmt.Errorf("invalid duration %q (use e.g. 30s, 5m, 2h or 90d)", s)
	}
	const day = 24 * time.Hour
	if n > uint64(1<<63-1)/uint64(day) {
		return 0, fmt.Errorf("invalid duration %q: too long", s)
	}
	d := time.Duration(n) * day
	if rest != "" {
		r, err := time.ParseDuration(rest)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q (use e.g. 30s, 5m, 2h or 90d)", s)
		}
		if d > 1<<63-1-r {
			return 0, fmt.Errorf("invalid duration %q: too long", s)
		}
		d += r
	}
	if neg {
		d = -d
	}
	return d, nil
}
