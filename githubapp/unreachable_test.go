package githubapp_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/githubapp"
	"github.com/lastmile-app/lastmile/pipeline"
)

// What waiting mends (GitHub down, the network cut) is unreachable; what a
// setting or the machine got wrong, a refusal, a rate limit and lastmile's
// own time limit are not.
func TestUnreachable(t *testing.T) {
	call := func(err error) error {
		return fmt.Errorf("create deployment: %w", &url.Error{Op: "Post", URL: "https://api.github.com/repos/acme/shop/deployments", Err: err})
	}
	answered := func(code int) error {
		return fmt.Errorf("create deployment: %w", &github.ErrorResponse{Response: &http.Response{StatusCode: code}, Message: http.StatusText(code)})
	}
	for name, tc := range map[string]struct {
		err  error
		want bool
	}{
		"connection refused":        {call(&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}), true},
		"connection reset":          {call(syscall.ECONNRESET), true},
		"answer cut short":          {call(io.ErrUnexpectedEOF), true},
		"resolver failing for now":  {call(&net.DNSError{Err: "server misbehaving", Name: "api.github.com", IsTemporary: true}), true},
		"502":                       {answered(502), true},
		"503 for the token":         {&githubapp.InstallationTokenError{Installation: 7, Status: "503 Service Unavailable", Code: 503}, true},
		"no answer for the token":   {&githubapp.InstallationTokenError{Installation: 7, Err: call(&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED})}, true},
		"a 5xx the engine refused":  {fmt.Errorf("create: %w", &pipeline.RefusedError{Status: 500}), true},
		"no such host":              {call(&net.DNSError{Err: "no such host", Name: "api.gihtub.com", IsNotFound: true}), false},
		"certificate not trusted":   {call(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), false},
		"certificate of other host": {call(x509.HostnameError{Host: "ghes.example.com"}), false},
		"redirect loop":             {call(errors.New("stopped after 10 redirects")), false},
		"lastmile's time limit":     {call(context.DeadlineExceeded), false},
		"a bare deadline":           {fmt.Errorf("record release: %w", context.DeadlineExceeded), false},
		"deadline while dialling":   {call(&net.OpError{Op: "dial", Net: "tcp", Err: context.DeadlineExceeded}), false},
		"shutdown":                  {call(context.Canceled), false},
		"no answer, token refused":  {&githubapp.InstallationTokenError{Installation: 7, Status: "401 Unauthorized", Code: 401}, false},
		"422":                       {answered(422), false},
		"404":                       {answered(404), false},
		"rate limited":              {&githubapp.RateLimitedError{Until: time.Now().Add(time.Minute), Status: 429}, false},
		"not a call":                {errors.New("database is locked"), false},
	} {
		if got := githubapp.Unreachable(tc.err); got != tc.want {
			t.Errorf("%s: Unreachable(%v) = %v, want %v", name, tc.err, got, tc.want)
		}
	}
}
