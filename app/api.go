package app

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
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
	g := e.Group("/api/v1", a.requireToken)
	for path, get := range map[string]echo.HandlerFunc{
		"/history":                    a.apiHistory,
		"/releases/:owner/:repo/:sha": a.apiRelease,
		"/jobs/:id/log":               a.apiJobLog,
	} {
		// Any other method on the API's paths: 405, once the token is
		// checked (the group's catch-all would say 404). GET and HEAD,
		// registered after, take their own.
		g.Any(path, readOnly)
		g.Match([]string{http.MethodGet, http.MethodHead}, path, get)
	}
}

// readOnly answers a request to write to the read API.
func readOnly(c echo.Context) error {
	c.Response().Header().Set("Allow", "GET, HEAD")
	return c.JSON(http.StatusMethodNotAllowed, map[string]string{"message": "Method Not Allowed: the API is read-only (GET, HEAD)"})
}

func (a *App) requireToken(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if a.cfg.APIToken == "" {
			return c.JSON(http.StatusNotFound, map[string]string{"message": "Not Found"})
		}
		// The scheme is case-insensitive (RFC 9110 §11.1).
		scheme, given, ok := strings.Cut(c.Request().Header.Get("Authorization"), " ")
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

// badParams answers 400 to a query parameter the endpoint does not take, or
// one given twice (a misspelt filter would otherwise return everything
// unfiltered); it reports whether it did.
func badParams(c echo.Context, takes ...string) (bool, error) {
	for name, values := range c.QueryParams() {
		var problem string
		switch {
		case !slices.Contains(takes, name):
			problem = fmt.Sprintf("unknown query parameter %q", name)
		case len(values) > 1:
			problem = fmt.Sprintf("query parameter %q given %d times", name, len(values))
		default:
			continue
		}
		if len(takes) == 0 {
			problem += ": this endpoint takes none"
		} else {
			problem += ": this endpoint takes " + strings.Join(takes, ", ")
		}
		return true, c.JSON(http.StatusBadRequest, map[string]string{"message": problem})
	}
	return false, nil
}

func (a *App) apiHistory(c echo.Context) error {
	if bad, err := badParams(c, "repository", "environment", "limit"); bad {
		return err
	}
	f := storage.HistoryFilter{Repository: c.QueryParam("repository"), Environment: c.QueryParam("environment")}
	if f.Repository != "" {
		if _, _, err := pipeline.SplitFullName(f.Repository); err != nil {
			return c.JSON(http.StatusBadRequest, map[string]string{"message": "repository must be OWNER/REPO, as GitHub names it"})
		}
	}
	if s := c.QueryParam("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			return c.JSON(http.StatusBadRequest, map[string]string{"message": "limit must be an integer from 1 to 1000"})
		}
		f.Limit = n
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

func (a *App) apiRelease(c echo.Context) error {
	if bad, err := badParams(c, "release"); bad {
		return err
	}
	var release int64
	if s := c.QueryParam("release"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return c.JSON(http.StatusBadRequest, map[string]string{"message": "release must be a release number (a positive integer, as in the history's release.id)"})
		}
		release = n
	}
	rec, err := a.db.AuditRelease(c.Request().Context(), c.Param("owner")+"/"+c.Param("repo"), c.Param("sha"), release)
	if err != nil {
		return a.apiError(c, err)
	}
	return c.JSON(http.StatusOK, rec)
}

func (a *App) apiJobLog(c echo.Context) error {
	if bad, err := badParams(c); bad {
		return err
	}
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil {
		return c.JSON(http.StatusBadRequest, map[string]string{"message": "job id must be a number"})
	}
	log, err := a.db.JobLog(c.Request().Context(), id)
	if err != nil {
		return a.apiError(c, err)
	}
	return c.Blob(http.StatusOK, "text/plain; charset=utf-8", log)
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
	default:
		a.log.Error("api", "path", c.Request().URL.Path, "error", err)
		return c.JSON(http.StatusInternalServerError, map[string]string{"message": "internal error"})
	}
	return c.JSON(status, map[string]string{"message": err.Error()})
}
