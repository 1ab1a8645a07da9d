package app

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// What a tool may send ambiguously is refused rather than read one way: a
// query Go's parsing would cut (a ;) or a filter given empty (both would
// return everything unfiltered), two Authorization headers (a proxy in
// front may have checked the other). The API's answers are kept by no
// cache, and read as what they say they are. Escapes in the path are
// decoded, and the commit checked before anything is looked up.
func TestReadAPIRefusesAmbiguousRequests(t *testing.T) {
	const token = "0123456789abcdef-token"
	sb, sha := promoted(t, func(c *Config) { c.APIToken = token })
	do := func(path string, auth ...string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, sb.URL()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range auth {
			req.Header.Add("Authorization", a)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	bearer := "Bearer " + token
	// Another commit, its first digit escaped: %30 is 0, or %31 (1) when
	// the commit's SHA begins with 0.
	other := byte('0')
	if sha[0] == '0' {
		other = '1'
	}
	escaped := fmt.Sprintf("%%%X", other) + sha[1:]
	for _, c := range []struct {
		path string
		code int
		says string
	}{
		{"/api/v1/history?repository=acme/nope;limit=1", 400, "malformed query string"},
		{"/api/v1/releases/acme/shop/" + sha + "?release=2;", 400, "malformed query string"},
		{"/api/v1/history?repository=", 400, `repository\" is empty`},
		{"/api/v1/history?limit=", 400, `limit\" is empty`},
		{"/api/v1/releases/acme/shop/" + sha + "?release=", 400, `release\" is empty`},
		{"/api/v1/releases/acme/nope/zzz", 400, "is not a commit SHA"},
		{"/api/v1/releases/acme/sh%6fp/" + sha, 200, sha},
		{"/api/v1/releases/acme/shop/" + escaped, 404, "no release of that commit"},
		{"/api/v1/history?before=0", 400, "before must be a release number"},
		// Decoded once: %25 is a %, not the start of another escape.
		{"/api/v1/releases/acme/shop/%2530" + sha[1:], 400, "is not a commit SHA"},
		{"/api/v1/releases/acme/sh%256fp/" + sha, 404, "repository acme/sh%6fp"},
		{"/api/v1/jobs/%31x/log", 400, "job id must be a number"},
		// More path after the SHA is no route, as after a job's log.
		{"/api/v1/releases/acme/shop/" + sha + "/extra", 404, "Not Found"},
		{"/api/v1/releases/acme/shop/" + sha + "/", 404, "Not Found"},
		{"/api/v1/jobs/1/log/extra", 404, "Not Found"},
		// No repository's name: a control character, too long.
		{"/api/v1/releases/acme%00/shop/" + sha, 400, "repository must be OWNER/REPO"},
		{"/api/v1/releases/acme/" + strings.Repeat("s", 101) + "/" + sha, 400, "repository must be OWNER/REPO"},
		{"/api/v1/history?repository=acme/sh%07p", 400, "repository must be OWNER/REPO"},
		{"/api/v1/releases/acme/" + strings.Repeat("s", 100) + "/" + sha, 404, "not found"},
	} {
		resp, body := do(c.path, bearer)
		if resp.StatusCode != c.code || !strings.Contains(body, c.says) {
			t.Errorf("GET %s: %d %s, want %d saying %q", c.path, resp.StatusCode, body, c.code, c.says)
		}
	}
	for _, auth := range [][]string{{bearer, "Bearer wrong"}, {"Bearer wrong", bearer}, {bearer, bearer}} {
		if resp, body := do("/api/v1/history", auth...); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("two Authorization headers %q: %d %s, want 401", auth, resp.StatusCode, body)
		}
	}
	for _, auth := range []string{bearer, ""} {
		resp, _ := do("/api/v1/history", auth)
		if resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("answer %d: Cache-Control %q, X-Content-Type-Options %q", resp.StatusCode,
				resp.Header.Get("Cache-Control"), resp.Header.Get("X-Content-Type-Options"))
		}
	}
	// Pages: the releases below a number.
	_, all := do("/api/v1/history", bearer)
	var newest int64
	if _, err := fmt.Sscanf(all[strings.Index(all, `"id":`)+len(`"id":`):], "%d", &newest); err != nil {
		t.Fatalf("no release id in %s", all)
	}
	if resp, body := do(fmt.Sprintf("/api/v1/history?before=%d", newest), bearer); resp.StatusCode != 200 || strings.Contains(body, sha) {
		t.Errorf("history before the release %d: %d %s, want it left out", newest, resp.StatusCode, body)
	}
	if resp, body := do(fmt.Sprintf("/api/v1/history?before=%d", newest+1), bearer); resp.StatusCode != 200 || !strings.Contains(body, sha) {
		t.Errorf("history before %d: %d %s, want the release", newest+1, resp.StatusCode, body)
	}
}
