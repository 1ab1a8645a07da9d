package app

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestREADMETreeNamesEveryCommand keeps the README's Development tree true:
// its cmd/lastmile/ line names every command lastmile's usage lists, and
// no other.
func TestREADMETreeNamesEveryCommand(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^cmd/lastmile/ +the binary: (.+)$`).FindSubmatch(readme)
	if m == nil {
		t.Fatal("README has no cmd/lastmile/ line in its Development tree")
	}
	var listed []string
	for _, c := range strings.Split(string(m[1]), ",") {
		listed = append(listed, strings.TrimSpace(c))
	}
	var want []string
	for _, c := range regexp.MustCompile(`(?m)^  lastmile ([a-z]+)`).FindAllStringSubmatch(usage, -1) {
		if !slices.Contains(want, c[1]) {
			want = append(want, c[1])
		}
	}
	slices.Sort(listed)
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Errorf("README's cmd/lastmile/ line names %v; lastmile's usage lists %v", listed, want)
	}
}
