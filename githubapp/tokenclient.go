package githubapp

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/google/go-github/v62/github"
)

// NewTokenClient returns a GitHub API client that authenticates with a
// ready-made token, such as a workflow run's GITHUB_TOKEN, against the REST
// API root apiURL (https://api.github.com, a GitHub Enterprise Server's
// https://HOST/api/v3, or the simulator; with or without a trailing slash).
// Its calls go through t, lastmile's one transport (retries, rate limits,
// metrics); a nil t means a Transport with its defaults.
//
// The lastmile Action uses it: it has a token, not the App's key.
func NewTokenClient(apiURL, token string, t *Transport) (*github.Client, error) {
	if token == "" {
		return nil, errors.New("no GitHub token")
	}
	base, err := url.Parse(apiURL)
	if err != nil {
		return nil, fmt.Errorf("GitHub API URL %q: %w", apiURL, err)
	}
	if base.Scheme != "http" && base.Scheme != "https" || base.Host == "" {
		return nil, fmt.Errorf("GitHub API URL %q: want an http(s) URL", apiURL)
	}
	if !strings.HasSuffix(base.Path, "/") {
		base.Path += "/"
	}
	if t == nil {
		t = &Transport{}
	}
	gh := github.NewClient(httpClient(t)).WithAuthToken(token)
	upload := *base
	gh.BaseURL, gh.UploadURL = base, &upload
	return gh, nil
}
