package githubapp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// presizeMax bounds the memory readBody sets aside at once on the word of a
// Content-Length alone, before a byte or the signature was checked: most of
// GitHub's deliveries are smaller (a push is 7–8 KB), and a client
// announcing a large body and sending nothing must not hold memory for it;
// larger bodies grow with what actually arrives.
const presizeMax = 64 << 10

// readBody reads the whole body, in one allocation when its length was
// announced (and small enough to trust).
//
// hold, if not nil, is asked before each allocation for the bytes the body
// would then hold in all (the capacity of its buffer, not only the bytes
// read: a buffer is memory held, read into or not); its error ends the
// read, before the allocation.
func readBody(rd io.Reader, announced int64, hold func(total int64) error) ([]byte, error) {
	if hold == nil {
		hold = func(int64) error { return nil }
	}
	if announced <= 0 || announced > presizeMax {
		b, err := readAll(rd, nil, announced, hold) // grows with what actually arrives
		if err == nil && announced <= MaxPayloadBytes && int64(len(b)) < announced {
			err = io.ErrUnexpectedEOF
		}
		return b, err
	}
	// One byte more than announced, to see the end: net/http stops the
	// body at its Content-Length, so ReadFull ends short, at that length.
	if err := hold(announced + 1); err != nil {
		return nil, err
	}
	b := make([]byte, announced+1)
	n, err := io.ReadFull(rd, b)
	switch err {
	case io.ErrUnexpectedEOF, io.EOF:
		if int64(n) != announced { // the sender stopped short
			return nil, io.ErrUnexpectedEOF
		}
		return b[:n], nil
	case nil: // longer than announced: not from net/http's server
		return readAll(rd, b, -1, hold)
	}
	return nil, err
}

// readAll reads rd to its end after b, like io.ReadAll, in one buffer grown
// by doubling (to the announced length and one byte, when one was announced
// and it is no more than MaxPayloadBytes: an honest body then ends in a
// buffer of its size), asking hold before each growth.
func readAll(rd io.Reader, b []byte, announced int64, hold func(total int64) error) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			size := max(2*int64(cap(b)), 512)
			if announced >= int64(len(b)) && announced <= MaxPayloadBytes && size >= announced {
				size = announced + 1
			}
			size = min(size, MaxPayloadBytes+1) // one more byte is an error anyway (http.MaxBytesReader)
			if size <= int64(len(b)) {
				size = int64(len(b)) + 512
			}
			if err := hold(size); err != nil {
				return nil, err
			}
			b = append(make([]byte, 0, size), b...)
		}
		n, err := rd.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// deliveryHead is what the intake reads from every body before storing it:
// enough to route and list a delivery, and to refuse one the worker could
// never handle. The handlers parse the whole body later, in the worker.
type deliveryHead struct {
	Action         string
	InstallationID int64
	RepositoryID   int64
	Repository     string // full_name
	Before, After  string // a push's before and after (read for a push only)
}

// maxNesting is encoding/json's own nesting limit.
const maxNesting = 10000

// parseHead validates body as one JSON object and reads its action,
// installation.id, repository.id and repository.full_name, in one pass;
// and, when event is "push", before and after (other events' fields of
// those names are not read: they may be anything).
//
// It accepts and rejects exactly what json.Unmarshal into the equivalent
// struct does (the fuzz test holds it to that): any syntax error, a wrong
// type for one of those fields, or a top-level value that is not an object
// is an error; null leaves a field empty; keys match case-insensitively and
// the last of duplicate keys wins. json.Unmarshal costs two passes over the
// body (it validates, then decodes); this is the intake's hot path, where
// the body is ~8 KB and the four fields are near its start or end.
func parseHead(body []byte, event string) (deliveryHead, error) {
	push := event == "push"
	s := headScanner{b: body}
	var h deliveryHead
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		if s.i >= len(s.b) {
			return h, errors.New("empty body")
		}
		// Validate first: a syntax error is reported as such.
		if err := s.value(0); err != nil {
			return h, err
		}
		return h, errors.New("a JSON value but not an object")
	}
	var typeErr error
	err := s.object(0, func(key []byte) error {
		switch {
		case keyIs(key, "action"):
			return s.stringField(1, &h.Action, &typeErr, "action")
		case keyIs(key, "installation"):
			return s.objectField(1, &typeErr, "installation", func(key []byte) (bool, error) {
				if !keyIs(key, "id") {
					return false, nil
				}
				return true, s.intField(2, &h.InstallationID, &typeErr, "installation.id")
			}, func() { h.InstallationID = 0 })
		case keyIs(key, "repository"):
			return s.objectField(1, &typeErr, "repository", func(key []byte) (bool, error) {
				switch {
				case keyIs(key, "id"):
					return true, s.intField(2, &h.RepositoryID, &typeErr, "repository.id")
				case keyIs(key, "full_name"):
					return true, s.stringField(2, &h.Repository, &typeErr, "repository.full_name")
				}
				return false, nil
			}, func() { h.RepositoryID, h.Repository = 0, "" })
		case push && keyIs(key, "before"):
			return s.stringField(1, &h.Before, &typeErr, "before")
		case push && keyIs(key, "after"):
			return s.stringField(1, &h.After, &typeErr, "after")
		}
		return s.value(1)
	})
	if err != nil {
		return deliveryHead{}, err
	}
	s.ws()
	if s.i != len(s.b) {
		return deliveryHead{}, s.errAt("after the top-level value")
	}
	if typeErr != nil {
		return deliveryHead{}, typeErr
	}
	return h, nil
}

// keyIs matches a raw (still quoted-escaped) key the way encoding/json does:
// exactly, or else case-insensitively after unescaping.
func keyIs(raw []byte, name string) bool {
	if string(raw) == name {
		return true
	}
	if bytes.IndexByte(raw, '\\') >= 0 {
		var k string
		if json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &k) != nil {
			return false
		}
		raw = []byte(k)
	}
	return bytes.EqualFold(raw, []byte(name))
}

type headScanner struct {
	b []byte
	i int
}

func (s *headScanner) errAt(what string) error {
	if s.i >= len(s.b) {
		return errors.New("unexpected end of JSON input")
	}
	return fmt.Errorf("invalid character %q %s (offset %d)", s.b[s.i], what, s.i)
}

func (s *headScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// object scans an object whose '{' is at s.i, calling field for each key
// with s.i on the value; field must consume the value. A nil field skips
// every value (the path of nested values: a body may nest 10,000 deep).
func (s *headScanner) object(depth int, field func(key []byte) error) error {
	if empty, err := s.enter(depth, '}'); empty || err != nil {
		return err
	}
	for {
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return s.errAt("looking for beginning of object key string")
		}
		key, err := s.str()
		if err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return s.errAt("after object key")
		}
		s.i++
		s.ws()
		if field == nil {
			err = s.value(depth + 1)
		} else {
			err = field(key)
		}
		if err != nil {
			return err
		}
		if more, err := s.next('}', "after object key:value pair"); !more || err != nil {
			return err
		}
	}
}

// enter steps into the object or array whose opening bracket is at s.i;
// empty reports that closer ends it at once.
func (s *headScanner) enter(depth int, closer byte) (empty bool, err error) {
	if depth+1 > maxNesting {
		return false, errors.New("exceeded max depth")
	}
	s.i++
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == closer {
		s.i++
		return true, nil
	}
	return false, nil
}

// next steps over what follows an element: a comma (more elements come) or
// closer (the end).
func (s *headScanner) next(closer byte, what string) (more bool, err error) {
	s.ws()
	if s.i >= len(s.b) {
		return false, s.errAt("")
	}
	switch s.b[s.i] {
	case ',':
		s.i++
		s.ws()
		return true, nil
	case closer:
		s.i++
		return false, nil
	}
	return false, s.errAt(what)
}

// objectField reads a field that must be an object or null: null calls
// reset, an object is scanned with field (which reports whether it consumed
// the value), any other value is a type error.
func (s *headScanner) objectField(depth int, typeErr *error, name string, field func(key []byte) (bool, error), reset func()) error {
	if s.i < len(s.b) {
		switch s.b[s.i] {
		case '{':
			return s.object(depth, func(key []byte) error {
				used, err := field(key)
				if err != nil || used {
					return err
				}
				return s.value(depth + 1)
			})
		case 'n':
			if err := s.literal("null"); err != nil {
				return err
			}
			reset()
			return nil
		}
	}
	got := valueKind(s.b[s.i:])
	if err := s.value(depth); err != nil {
		return err
	}
	if *typeErr == nil {
		*typeErr = &headTypeError{name, "an object", got}
	}
	return nil
}

// intField reads an integer into dst; null leaves it, another type or a
// number that is not an int64 is a type error.
func (s *headScanner) intField(depth int, dst *int64, typeErr *error, name string) error {
	start := s.i
	if s.i < len(s.b) && (s.b[s.i] == '-' || (s.b[s.i] >= '0' && s.b[s.i] <= '9')) {
		if err := s.number(); err != nil {
			return err
		}
		n, err := strconv.ParseInt(string(s.b[start:s.i]), 10, 64)
		if err != nil {
			if *typeErr == nil {
				*typeErr = &headTypeError{name, "an integer", fmt.Sprintf("the number %.40s", s.b[start:s.i])}
			}
			return nil
		}
		*dst = n
		return nil
	}
	return s.otherValue(depth, typeErr, name, "an integer")
}

// stringField reads a string into dst; null leaves it, another type is a
// type error.
func (s *headScanner) stringField(depth int, dst *string, typeErr *error, name string) error {
	if s.i < len(s.b) && s.b[s.i] == '"' {
		start := s.i
		raw, err := s.str()
		if err != nil {
			return err
		}
		if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
			*dst = string(raw)
			return nil
		}
		// Escapes or invalid UTF-8 (replaced by U+FFFD): rare, let
		// encoding/json decode them exactly as it would.
		return json.Unmarshal(s.b[start:s.i], dst)
	}
	return s.otherValue(depth, typeErr, name, "a string")
}

// otherValue reads a value that is not of the field's type: null leaves the
// field as it is; anything else is validated and recorded as the (first)
// type error, as json.Unmarshal reports it after reading the whole body.
func (s *headScanner) otherValue(depth int, typeErr *error, name, want string) error {
	if s.i < len(s.b) && s.b[s.i] == 'n' {
		return s.literal("null")
	}
	got := valueKind(s.b[s.i:])
	if err := s.value(depth); err != nil {
		return err
	}
	if *typeErr == nil {
		*typeErr = &headTypeError{name, want, got}
	}
	return nil
}

// headTypeError is a field of the head of another type than the intake
// reads, said as the router says one (payloadError).
type headTypeError struct{ field, want, got string }

func (e *headTypeError) Error() string {
	return fmt.Sprintf("field %q: want %s, got %s", e.field, e.want, e.got)
}

// valueKind says what kind of JSON value b begins with (a valid one: the
// caller validates it).
func valueKind(b []byte) string {
	if len(b) > 0 {
		switch b[0] {
		case '"':
			return "a string"
		case '{':
			return "an object"
		case '[':
			return "an array"
		case 't', 'f':
			return "a boolean"
		}
	}
	return "a number"
}

// value skips any JSON value, validating it.
func (s *headScanner) value(depth int) error {
	if s.i >= len(s.b) {
		return s.errAt("")
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object(depth, nil)
	case c == '[':
		return s.array(depth)
	case c == '"':
		_, err := s.str()
		return err
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return s.errAt("looking for beginning of value")
}

func (s *headScanner) array(depth int) error {
	if empty, err := s.enter(depth, ']'); empty || err != nil {
		return err
	}
	for {
		if err := s.value(depth + 1); err != nil {
			return err
		}
		if more, err := s.next(']', "after array element"); !more || err != nil {
			return err
		}
	}
}

// str scans a string whose '"' is at s.i and returns its raw content.
func (s *headScanner) str() ([]byte, error) {
	s.i++
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return s.b[start : s.i-1], nil
		case c == '\\':
			s.i++
			if s.i >= len(s.b) {
				return nil, s.errAt("")
			}
			switch s.b[s.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				s.i++
				for k := 0; k < 4; k++ {
					if s.i >= len(s.b) || !isHex(s.b[s.i]) {
						return nil, s.errAt("in \\u hexadecimal character escape")
					}
					s.i++
				}
			default:
				return nil, s.errAt("in string escape code")
			}
		case c < 0x20:
			return nil, s.errAt("in string literal")
		default:
			s.i++
		}
	}
	return nil, s.errAt("")
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func (s *headScanner) number() error {
	if s.b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(s.b) && s.b[s.i] == '0':
		s.i++
	case s.i < len(s.b) && isDigit(s.b[s.i]):
		for s.i < len(s.b) && isDigit(s.b[s.i]) {
			s.i++
		}
	default:
		return s.errAt("in numeric literal")
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if s.i >= len(s.b) || !isDigit(s.b[s.i]) {
			return s.errAt("after decimal point in numeric literal")
		}
		for s.i < len(s.b) && isDigit(s.b[s.i]) {
			s.i++
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if s.i >= len(s.b) || !isDigit(s.b[s.i]) {
			return s.errAt("in exponent of numeric literal")
		}
		for s.i < len(s.b) && isDigit(s.b[s.i]) {
			s.i++
		}
	}
	return nil
}

func (s *headScanner) literal(lit string) error {
	for k := 0; k < len(lit); k++ {
		if s.i >= len(s.b) || s.b[s.i] != lit[k] {
			return s.errAt("in literal " + lit)
		}
		s.i++
	}
	return nil
}
