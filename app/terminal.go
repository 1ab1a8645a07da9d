package app

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"unicode/utf8"
)

// terminal is what the text commands (history, audit, deliveries) print
// through. The records hold text from outside — commit titles and authors,
// status descriptions, environment names, deploy logs — and a control
// sequence in it must not reach the operator's terminal, where it could
// clear the screen, hide lines, set the title or write the clipboard. Every
// control character but tab, newline and a carriage return before a
// newline is shown escaped (ESC as \x1b), and so is every bidirectional
// formatting character (U+202E as \u202e); the text lastmile writes itself
// has none. JSON output is escaped by writeJSONTo.
type terminal struct{ w io.Writer }

func (t terminal) Write(p []byte) (int, error) {
	if !bytes.ContainsFunc(p, isControl) && utf8.Valid(p) {
		return t.w.Write(p)
	}
	var b bytes.Buffer
	b.Grow(len(p) + 16)
	for i := 0; i < len(p); {
		r, size := utf8.DecodeRune(p[i:])
		switch {
		case r == '\t' || r == '\n' || (r == '\r' && i+1 < len(p) && p[i+1] == '\n'):
			b.WriteByte(byte(r))
		case r == utf8.RuneError && size == 1:
			if c := p[i]; c >= 0x80 && c <= 0x9f { // an 8-bit control to some terminals (0x9b is CSI)
				fmt.Fprintf(&b, `\x%02x`, c)
			} else {
				b.WriteByte(c)
			}
		case isControl(r):
			if r < 0x80 {
				fmt.Fprintf(&b, `\x%02x`, r)
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		default:
			b.Write(p[i : i+size])
		}
		i += size
	}
	if _, err := t.w.Write(b.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// isControl reports C0 and C1 control characters and DEL, but not tab or
// newline, and the bidirectional formatting characters, which reorder how
// the rest of a line shows (a title that reads other than it is).
func isControl(r rune) bool {
	return (r < 0x20 && r != '\t' && r != '\n') || r == 0x7f || (r >= 0x80 && r <= 0x9f) ||
		r == 0x061c || r == 0x200e || r == 0x200f || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
}

// checkedWriter remembers the first error of writing to w, so that a
// command printing with fmt.Fprint* fails (exit 1, the error on stderr)
// when its output did not reach its file — a full disk, a closed pipe —
// rather than leave a script with a truncated report it believes whole.
// It may be written from several goroutines (register's page prints
// while the command waits), as os.Stdout may.
type checkedWriter struct {
	w   io.Writer
	mu  sync.Mutex
	err error
}

func (c *checkedWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	c.err = err
	return n, err
}

// failed is the first error of writing, or nil.
func (c *checkedWriter) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}
