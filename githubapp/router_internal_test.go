package githubapp

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// configReader is an engine that handles a push as the pipeline's does
// first: it reads the repository's configuration at the pushed commit,
// through the GitHub adapter, and wraps the adapter's error as the
// pipeline does.
type configReader struct {
	Engine
	gh *GitHub
}

func (e *configReader) HandlePush(ctx context.Context, p pipeline.Push) error {
	if _, err := e.gh.ReadFile(ctx, p.Repo, pipeline.ConfigPath, p.After); err != nil {
		return fmt.Errorf("read %s at %s: %w", pipeline.ConfigPath, p.After[:7], err)
	}
	return nil
}

// A request whose URL cannot be built from the payload's values fails the
// same way at every attempt: the delivery is malformed, dead at once. A
// request that could not reach GitHub is not.
func TestRouterTakesAnUnbuildableURLAsMalformed(t *testing.T) {
	var requests atomic.Int64
	gh, _ := scriptedGitHub(t, func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Error(w, `{"message":"Not Found"}`, http.StatusNotFound)
	})
	push := func(fullName string) *pipeline.Delivery {
		body := fmt.Sprintf(`{"ref":"refs/heads/main","before":"%s","after":"%s","installation":{"id":7},"repository":{"id":1,"full_name":%q}}`,
			strings.Repeat("0", 40), strings.Repeat("a", 40), fullName)
		return &pipeline.Delivery{ID: "d", Event: "push", Body: []byte(body)}
	}
	rt := &Router{Engine: &configReader{gh: gh}}
	for name, tc := range map[string]struct{ fullName, failed string }{
		// Stored before the intake refused it; no repository name has
		// white space, so it is refused as the repository's.
		"a control character": {"acme/sh\top", "is not an owner/name repository"},
		"a bad %-escape":      {"acme/shop%zz", "read " + pipeline.ConfigPath},
	} {
		t.Run(name, func(t *testing.T) {
			requests.Store(0)
			err := rt.Handle(context.Background(), push(tc.fullName))
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("Handle = %v, want ErrMalformed", err)
			}
			if err == nil || !strings.Contains(err.Error(), tc.failed) {
				t.Errorf("error %q lost what failed (%q)", err, tc.failed)
			}
			if n := requests.Load(); n != 0 {
				t.Errorf("%d requests reached GitHub", n)
			}
		})
	}
	t.Run("GitHub unreachable", func(t *testing.T) {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		down, err := NewClients("http://127.0.0.1:1/", 1, key, &Transport{MaxRetries: 1, BaseDelay: time.Millisecond}) // nothing listens there
		if err != nil {
			t.Fatal(err)
		}
		rt := &Router{Engine: &configReader{gh: &GitHub{Clients: down}}}
		err = rt.Handle(context.Background(), push("acme/shop"))
		var ue *url.Error
		if err == nil || errors.Is(err, ErrMalformed) || !errors.As(err, &ue) || !strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Errorf("Handle = %v, want a *url.Error (of 127.0.0.1:1) that is not ErrMalformed", err)
		}
	})
}
