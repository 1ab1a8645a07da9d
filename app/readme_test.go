package app

import (
	"bytes"
	"context"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEConfigurationTable keeps the README's configuration table true:
// the same variables, flags and defaults as the code, in the same order.
func TestREADMEConfigurationTable(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `(LASTMILE_[A-Z_]+)` \\| `(--[a-z-]+)` \\|([^|]*)\\|")
	var got []string
	for _, line := range strings.Split(string(readme), "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			got = append(got, m[1]+" "+m[2]+" "+strings.Trim(strings.TrimSpace(m[3]), "`"))
		}
	}
	var want []string
	for _, s := range settings {
		def := s.def
		if s.required {
			def = "(required)"
		}
		want = append(want, s.env+" --"+s.flag+" "+def)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("README configuration table:\n%s\n\nthe code:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestREADMECommandTableNamesTheDatabase keeps the README's command table
// true about --database: every row of a command that takes it shows it
// (serve's row, "[flags]", aside).
func TestREADMECommandTableNamesTheDatabase(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `lastmile ([a-z]+)([^`]*)` \\|")
	rows := 0
	for _, line := range strings.Split(string(readme), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil || strings.Contains(m[2], "[flags]") {
			continue
		}
		rows++
		var help bytes.Buffer
		if code := Main(context.Background(), []string{m[1], "--help"}, func(string) string { return "" }, &help, io.Discard); code != 0 {
			t.Fatalf("lastmile %s --help: exit %d", m[1], code)
		}
		takes := regexp.MustCompile(`(?m)^  -database\b`).Match(help.Bytes())
		if shows := strings.Contains(m[2], "[--database F]"); takes != shows {
			t.Errorf("README row `lastmile %s%s`: shows [--database F] %v, but the command takes --database: %v", m[1], m[2], shows, takes)
		}
	}
	if rows < 8 {
		t.Errorf("only %d rows of the command table found", rows)
	}
}
