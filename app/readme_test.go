package app

import (
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
