package app

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"strconv"
	"strings"
	"testing"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/pipeline"
)

// wrongKey runs lastmile with a private key that is not the App's.
func wrongKey(t *testing.T) *Sandbox {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return sandbox(t, func(c *Config) {
		c.Key = key
		c.MaxAttempts = 100 // pending, not dead, while the test looks
	})
}

// With a wrong private key every delivery fails to get an installation
// token: `lastmile deliveries --state pending` ends its DETAIL with
// GitHub's answer, the cause, which a cut in the middle keeps.
func TestWrongPrivateKeyShowsGitHubsAnswer(t *testing.T) {
	sb := wrongKey(t)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	var failed *pipeline.Delivery
	waitFor(t, sb, "the push's delivery to fail", func(*simulator.Simulator) bool {
		list, err := sb.App.DB().ListDeliveries(context.Background(), storageFilterAll())
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range list {
			if d.Event == "push" && d.LastError != "" {
				failed = d
				return true
			}
		}
		return false
	})
	cause := "installation token for installation " + strconv.FormatInt(failed.InstallationID, 10) +
		": GitHub answered 401 Unauthorized: A JSON web token could not be decoded"
	if !strings.HasSuffix(failed.LastError, cause) || !strings.Contains(failed.LastError, "read .github/lastmile.yml at "+push.After[:7]) {
		t.Errorf("last error %q, want the configuration read, ending with %q", failed.LastError, cause)
	}
	code, stdout, stderr := run(t, sb.Config.Database, "deliveries", "--state", "pending")
	if code != 0 {
		t.Fatalf("deliveries: exit %d, %s", code, stderr)
	}
	var row string
	for _, l := range strings.Split(stdout, "\n") {
		if strings.Contains(l, failed.ID) {
			row = strings.TrimRight(l, " ")
		}
	}
	// The DETAIL's last 66 characters: most of GitHub's answer.
	if !strings.HasSuffix(row, "answered 401 Unauthorized: A JSON web token could not be decoded") {
		t.Errorf("deliveries --state pending shows\n%s\nwant the row of %s to end with GitHub's answer", stdout, failed.ID)
	}
	t.Logf("lastmile deliveries --state pending:\n%s", stdout)
}
