package app

import (
	"bytes"
	"testing"
)

func TestTerminalEscapesControlSequences(t *testing.T) {
	for in, want := range map[string]string{
		"Fix typo\n":                              "Fix typo\n",
		"a\tb\r\nc":                               "a\tb\r\nc",
		"mallory\x1b[2J":                          `mallory\x1b[2J`,
		"ok\x1b]52;c;Y3VybA==\a":                  `ok\x1b]52;c;Y3VybA==\x07`,
		"progress 50%\rprogress 100%":             `progress 50%\x0dprogress 100%`,
		"8-bit CSI \x9b2J, C1 \u009b2J, DEL \x7f": `8-bit CSI \x9b2J, C1 \u009b2J, DEL \x7f`,
		"café, naïve, 日本, latin-1 \xe9":           "café, naïve, 日本, latin-1 \xe9",
		// Bidirectional formatting: a title that shows other than it reads.
		"Fix \u202eexe.txt\u202c, \u2066x\u2069 \u200f": `Fix \u202eexe.txt\u202c, \u2066x\u2069 \u200f`,
	} {
		var b bytes.Buffer
		n, err := terminal{&b}.Write([]byte(in))
		if err != nil || n != len(in) || b.String() != want {
			t.Errorf("%q: wrote %q (%d, %v), want %q (%d)", in, b.String(), n, err, want, len(in))
		}
	}
}

// JSON output escapes what the text output escapes, as \u escapes that
// mean the same inside its strings: DEL, C1 and the bidirectional
// formatting characters (encoding/json escapes C0 itself).
func TestWriteJSONEscapesWhatTheTerminalWould(t *testing.T) {
	var b bytes.Buffer
	if err := writeJSONTo(&b, map[string]string{"title": "Fix \u202egnp.exe\u202c, DEL \x7f, CSI \u009b2J, tab\t"}); err != nil {
		t.Fatal(err)
	}
	want := `"Fix \u202egnp.exe\u202c, DEL \u007f, CSI \u009b2J, tab\t"`
	if !bytes.Contains(b.Bytes(), []byte(want)) {
		t.Errorf("writeJSONTo printed %s, want it to hold %s", b.Bytes(), want)
	}
}
