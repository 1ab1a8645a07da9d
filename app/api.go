package app

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// The read API serves the history and audit records as JSON, for tools.
// It shares the webhook's address, which faces the internet, unless
// Config.AdminListen gives it one of its own; either way it is never
// anonymous: every request needs `Authorization: Bearer <LASTMILE_API_TOKEN>`,
// and without a configured token the API does not exist (404). A missing or
// wrong token gets 401 and nothing else — not even whether the record
// exists.
func (a *App) mountAPI(e *echo.Echo) {
	// Any method but GET and HEAD: 405, once the token is checked — on
	// every path of the API, and for methods the router does not know
	// (which it would send to the group's catch-all, a 404).
	g := e.Group("/api/v1", a.requireToken, readOnly)
	for path, get := range map[string]echo.HandlerFunc{
		"/history":                    a.apiHistory,
		"/status":                     a.apiStatus,
		"/releases/:owner/:repo/:sha": a.apiRelease,
		"/jobs/:id/log":               a.apiJobLog,
	} {
		g.Match([]string{http.MethodGet, http.MethodHead}, path, get)
	}
}

// readOnly answers a request to write to the read API, or with any other
// method than GET and HEAD: 405.
func readOnly(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if m := c.Request().Method; m == http.MethodGet || m == http.MethodHead {
			return next(c)
		}
		c.Response().Header().Set("Allow", "GET, HEAD")
		return c.JSON(http.StatusMethodNotAllowed, map[string]string{"message": "Method Not Allowed: the API is read-only (GET, HEAD)"})
	}
}

func (a *App) requireToken(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		// Records of who deployed what: kept by no cache, and read as
		// what they say they are (a deploy log is text, whatever it holds).
		h := c.Response().Header()
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		if a.cfg.APIToken == "" {
			return c.JSON(http.StatusNotFound, map[string]string{"message": "Not Found"})
		}
		// The scheme is case-insensitive (RFC 9110 §11.1). One header
		// only: of two, a proxy in front may have checked the other.
		auth := c.Request().Header.Values("Authorization")
		scheme, given, ok := "", "", len(auth) == 1
		if ok {
			scheme, given, ok = strings.Cut(auth[0], " ")
		}
		ok = ok && strings.EqualFold(scheme, "Bearer")
		// Compare digests, so the comparison takes the same time whatever
		// the lengths.
		want := sha256.Sum256([]byte(a.cfg.APIToken.Reveal()))
		got := sha256.Sum256([]byte(strings.TrimSpace(given)))
		if !ok || subtle.ConstantTimeCompare(want[:], got[:]) != 1 {
			c.Response().Header().Set("WWW-Authenticate", `Bearer realm="lastmile"`)
			return c.JSON(http.StatusUnauthorized, map[string]string{"message": "a valid bearer token is required"})
		}
		return next(c)
	}
}

// queryParams is the request's query, or a 400 answer (bad reports it) to
// one that is malformed (a ; in it: Go's own parsing drops the pair
// silently), or has a parameter the endpoint does not take, one given
// twice, or one given empty — a misspelt or empty filter would otherwise
// return everything unfiltered.
func queryParams(c echo.Context, takes ...string) (q url.Values, bad bool, err error) {
	q, perr := url.ParseQuery(c.Request().URL.RawQuery)
	if perr != nil {
		return nil, true, c.JSON(http.StatusBadRequest, map[string]string{"message": "malformed query string: " + perr.Error()})
	}
	for _, name := range slices.Sorted(maps.Keys(q)) {
		values := q[name]
		var problem string
		switch {
		case !slices.Contains(takes, name):
			problem = fmt.Sprintf("unknown query parameter %q", name)
		case len(values) > 1:
			problem = fmt.Sprintf("query parameter %q given %d times", name, len(values))
		case values[0] == "":
			return nil, true, c.JSON(http.StatusBadRequest, map[string]string{"message": fmt.Sprintf("query parameter %q is empty: leave it out for no filter", name)})
		default:
			continue
		}
		if len(takes) == 0 {
			problem += ": this endpoint takes none"
		} else {
			problem += ": this endpoint takes " + strings.Join(takes, ", ")
		}
		return nil, true, c.JSON(http.StatusBadRequest, map[string]string{"message": problem})
	}
	return q, false, nil
}

// repositoryParam is the query's repository filter ("" for none), or a
// 400 answer (bad reports it) to one that is no OWNER/REPO, as the CLI
// refuses it, rather than a 404 as for a repository without records.
func repositoryParam(c echo.Context, q url.Values) (repo string, bad bool, err error) {
	repo = q.Get("repository")
	if repo != "" && pipeline.CheckFullName(repo) != nil {
		return "", true, c.JSON(http.StatusBadRequest, map[string]string{"message": "repository must be OWNER/REPO, as GitHub names it"})
	}
	return repo, false, nil
}

func (a *App) apiHistory(c echo.Context) error {
	q, bad, err := queryParams(c, "repository", "environment", "limit", "before")
	if bad {
		return err
	}
	f := storage.HistoryFilter{Environment: q.Get("environment")}
	if f.Repository, bad, err = repositoryParam(c, q); bad {
		return err
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			return c.JSON(http.StatusBadRequest, map[string]string{"message": "limit must be an integer from 1 to 1000"})
		}
		f.Limit = n
	}
	if s := q.Get("before"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return c.JSON(http.StatusBadRequest, map[string]string{"message": "before must be a release number (a positive integer, as in the history's release.id): the releases below it, for the page after one ending there"})
		}
		f.Before = n
	}
	list, err := a.db.History(c.Request().Context(), f)
	if err != nil {
		return a.apiError(c, err)
	}
	if list == nil {
		list = []pipeline.HistoryEntry{} // [] for none, not null
	}
	return c.JSON(http.StatusOK, map[string]any{"releases": list})
}

func (a *App) apiStatus(c echo.Context) error {
	q, bad, err := queryParams(c, "repository")
	if bad {
		return err
	}
	repo, bad, err := repositoryParam(c, q)
	if bad {
		return err
	}
	list, err := a.db.Status(c.Request().Context(), repo)
	if err != nil {
		return a.apiError(c, err)
	}
	return c.JSON(http.StatusOK, map[string]any{"environments": list})
}

func (a *App) apiRelease(c echo.Context) error {
	q, bad, err := queryParams(c, "release")
	if bad {
		return err
	}
	var parts [3]string
	for i, name := range []string{"owner", "repo", "sha"} {
		if parts[i], err = pathParam(c, name); err != nil {
			return c.JSON(http.StatusBadRequest, map[string]string{"message": "malformed path: " + err.Error()})
		}
	}
	repo, sha := parts[0]+"/"+parts[1], parts[2]
	// Checked before anything is looked up, as lastmile audit does.
	if err := pipeline.CheckFullName(repo); err != nil {
		return c.JSON(http.StatusBadRequest, map[string]string{"message": "repository must be OWNER/REPO, as GitHub names it"})
	}
	if strings.Contains(sha, "/") {
		// More path after the SHA (Echo's last parameter takes the
		// rest): no route of the API.
		return c.JSON(http.StatusNotFound, map[string]string{"message": "Not Found"})
	}
	if err := pipeline.CheckSHA(sha); err != nil {
		return c.JSON(http.StatusBadRequest, map[string]string{"message": err.Error()})
	}
	var release int64
	if s := q.Get("release"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return c.JSON(http.StatusBadRequest, map[string]string{"message": "release must be a release number (a positive integer, as in the history's release.id)"})
		}
		release = n
	}
	rec, err := a.db.AuditRelease(c.Request().Context(), repo, sha, release)
	var none *storage.NoReleaseError
	if errors.As(err, &none) && len(none.Decisions) > 0 {
		return c.JSON(http.StatusNotFound, noReleaseBody(none))
	}
	if err != nil {
		return a.apiError(c, err)
	}
	return c.JSON(http.StatusOK, auditJSONOf(rec))
}

func (a *App) apiJobLog(c echo.Context) error {
	if _, bad, err := queryParams(c); bad {
		return err
	}
	param, err := pathParam(c, "id")
	if err != nil {
		return c.JSON(http.StatusBadRequest, map[string]string{"message": "malformed path: " + err.Error()})
	}
	id, err := strconv.ParseInt(param, 10, 64)
	if err != nil {
		return c.JSON(http.StatusBadRequest, map[string]string{"message": "job id must be a number"})
	}
	log, err := a.db.JobLog(c.Request().Context(), id)
	if err != nil {
		return a.apiError(c, err)
	}
	return c.Blob(http.StatusOK, "text/plain; charset=utf-8", log)
}

// pathParam is the path parameter name decoded once: Echo routes on the
// path as sent (URL.RawPath) when it holds escapes Go would not have made,
// and its parameters then keep them; otherwise on the decoded path.
func pathParam(c echo.Context, name string) (string, error) {
	if c.Request().URL.RawPath == "" {
		return c.Param(name), nil
	}
	return url.PathUnescape(c.Param(name))
}

// apiError maps errors to statuses in one place.
func (a *App) apiError(c echo.Context, err error) error {
	var status int
	switch {
	case notFound(err):
		status = http.StatusNotFound
	case errors.Is(err, storage.ErrPruned):
		status = http.StatusGone
	case errors.Is(err, pipeline.ErrInvalid):
		status = http.StatusBadRequest
	case errors.As(err, new(*storage.DamagedLogError)):
		// The record's own fault, not the request's: said, and logged.
		a.log.Error("api", "path", c.Request().URL.Path, "error", err)
		status = http.StatusInternalServerError
	default:
		a.log.Error("api", "path", c.Request().URL.Path, "error", err)
		return c.JSON(http.StatusInternalServerError, map[string]string{"message": "internal error"})
	}
	return c.JSON(status, map[string]string{"message": err.Error()})
}
