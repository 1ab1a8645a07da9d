package action

import (
	"strings"
	"testing"
)

// The environment is appended to the command's text only where it becomes
// the last command's last argument.
func TestAppendable(t *testing.T) {
	for script, problem := range map[string]string{
		"./deploy.sh":                                          "",
		"./deploy.sh --verbose\n":                              "",
		"# set up\nmake deps\n./deploy.sh":                     "",
		"echo 'a # b' && ./deploy.sh":                          "",
		`echo "it's \"quoted\" # not a comment" ; ./deploy.sh`: "",
		"echo a\\ #b; ./deploy.sh":                             "",
		"echo ${#PATH} $# && ./deploy.sh":                      "",
		"echo \\\\":                                            "",
		"./deploy.sh --from=x#y":                               "",
		"cat <<< word":                                         "",
		"./deploy.sh   # the environment goes here":            "ends with a comment",
		"./deploy.sh \\":                                       "ends with a backslash",
		"echo 'unterminated":                                   "' quote is not closed",
		"echo \"unterminated \\\"":                             `" quote is not closed`,
		"cat <<EOF\nhello\nEOF":                                "here-document",
	} {
		err := appendable(script)
		if (problem == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), problem)) {
			t.Errorf("%q: %v, want %q", script, err, problem)
		}
	}
}
