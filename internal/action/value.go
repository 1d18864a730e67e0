package action

import (
	"bytes"
	"encoding/json"
	"errors"
)

// Value turns a param value as a request sent it into its one string
// form: a JSON string as is, an integer number in decimal, true or false.
// null, fractions, arrays and objects are refused: no param type takes
// them, and converting them would let two spellings mean one value.
func Value(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", errors.New("missing value")
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", errors.New("not a valid string")
		}
		return s, nil
	case 't', 'f':
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return "", errors.New("not a valid value")
		}
		if b {
			return "true", nil
		}
		return "false", nil
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		if !intRE.Match(raw) {
			return "", errors.New("numbers must be integers written without exponent, fraction or leading zeros")
		}
		return string(raw), nil
	}
	return "", errors.New("want a string, an integer or a boolean")
}

// Value is Value(raw) for this param: a JSON number only for an int
// param and true or false only for a bool param, so that a value's JSON
// type never differs from what the param declares.
func (p *Param) Value(raw json.RawMessage) (string, error) {
	v, err := Value(raw)
	if err != nil {
		return "", err
	}
	switch c := bytes.TrimSpace(raw)[0]; {
	case c == 't' || c == 'f':
		if p.Type != TypeBool {
			return "", errors.New("true and false are for bool params; send a string")
		}
	case c != '"':
		if p.Type != TypeInt {
			return "", errors.New("numbers are for int params; send a string")
		}
	}
	return v, nil
}
