package action

import (
	"strings"
	"testing"
)

// The environment is appended to the command's text only where it becomes
// the last command's last argument.
func TestAppendable(t *testing.T) {
	for script, problem := range map[string]string{
		"./deploy.sh":                                         "",
		"./deploy.sh --verbose\n":                             "",
		"# set up\nmake deps\n./deploy.sh":                    "",
		"echo 'a # b' && ./deploy.sh --to":                    "list with &&", // the last line is a list: its last command would get it
		"echo 'a # b'\n./deploy.sh":                           "",
		`echo "it's \"quoted\" # not a comment"; ./deploy.sh`: "",
		"echo a\\ #b; ./deploy.sh":                            "",
		"echo ${#PATH} $# ${v#pre}; ./deploy.sh":              "",
		"./deploy.sh --from=x#y https://e.example/#frag":      "",
		"./deploy.sh > deploy.log":                            "",
		"cat > cfg.json <<EOF\n{\"a\": 1}\nEOF\n./deploy.sh":  "",
		"x=$((1 << 3))\n./deploy.sh":                          "",
		"echo $'it\\'s'; ./deploy.sh":                         "",
		"echo \"$(echo \"it's\")\"; ./deploy.sh":              "",
		"./deploy.sh \\\n  --verbose":                         "",
		"./deploy.sh   # the environment goes here":           "last argument",
		"./deploy.sh \\":                                      "last argument",
		"./deploy.sh \\\n#note":                               "last argument",
		"./deploy.sh;":                                        "command of its own",
		"./deploy.sh &":                                       "command of its own",
		"./deploy.sh &&":                                      "cannot be read",
		"./deploy.sh 2>&1 | tee deploy.log":                   "not one simple command",
		"if true; then ./deploy.sh; fi":                       "no longer valid",
		"echo 'unterminated":                                  "cannot be read",
		"cat <<EOF\nhello\nEOF":                               "no longer valid",
		"cat <<EOF\nhello":                                    "cannot be read",
		"./deploy.sh\nDEPLOYED=yes":                           "would be the command run",
		"./deploy.sh\n> marker":                               "would be the command run",
		"DEPLOYED=yes ./deploy.sh":                            "",
	} {
		err := appendable(script)
		if (problem == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), problem)) {
			t.Errorf("%q: %v, want %q", script, err, problem)
		}
	}
}

// environment-url is GitHub's link to the deployment: only an absolute
// http(s) URL with a host.
func TestHTTPURL(t *testing.T) {
	for s, want := range map[string]bool{
		"https://staging.example.com":            true,
		"http://10.0.0.7:8080/":                  true,
		"HTTPS://Staging.Example.com/shop?x=1#a": true,
		"https://[::1]:8443/health":              true,
		"https://shop.example.com/sale/50%-off":  true,
		"https://shop.example.com/#50%":          true,
		"https://shop.example.com/?discount=50%": true,
		"https://shop%zz.example.com/":           false,
		"https://a.example.com:port/":            false,
		"https://a.example.com:99999/":           false,
		"https://a.example.com:0/":               false,
		"https://a.example.com:65535/":           true,
		"staging.example.com":                    false,
		"not a url":                              false,
		"javascript:alert(1)":                    false,
		"https://Staging EU.example.com":         false,
		"https://staging.example.com/a b":        false,
		"https://staging.example.com/\tx":        false,
		"https://staging.example.com/\u202ex":    false,
		"ftp://files.example.com":                false,
		"https://":                               false,
		"https:staging.example.com":              false,
		"//staging.example.com":                  false,
		"https://:443/":                          false,
		"/relative/path":                         false,
	} {
		if got := httpURL(s); got != want {
			t.Errorf("httpURL(%q) = %v, want %v", s, got, want)
		}
	}
}
