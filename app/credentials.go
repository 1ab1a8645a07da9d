package app

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/githubapp"
)

// checkCredentials asks GitHub once, at start-up, for the App its JWT
// authenticates (GET /app), and logs the answer: an ERROR naming the likely
// cause when GitHub refuses the credentials (401) or has no such address
// (404: LASTMILE_GITHUB_URL is not the API root), a WARN when GitHub could
// not be asked. It runs beside the service and neither stops nor delays it,
// nor does it change readiness: with bad credentials every delivery fails
// and waits in the inbox until they are fixed, and an unreachable GitHub
// may come back.
func checkCredentials(ctx context.Context, clients *githubapp.Clients, appID int64, log *slog.Logger) {
	app, _, err := clients.App().Apps.Get(ctx, "")
	if ctx.Err() != nil {
		return // stopping
	}
	api := redactURL(strings.TrimSuffix(clients.BaseURL().String(), "/"))
	var refused *github.ErrorResponse
	switch {
	case err == nil:
		log.Info("GitHub accepts the App's credentials", "app_id", app.GetID(), "app", app.GetSlug(),
			"installations", app.GetInstallationsCount())
	case errors.As(err, &refused) && refused.Response != nil && refused.Response.StatusCode == http.StatusUnauthorized:
		cause := "LASTMILE_APP_ID or the private key (LASTMILE_PRIVATE_KEY_FILE or LASTMILE_PRIVATE_KEY) is not the App's"
		if strings.Contains(refused.Message, "claim") {
			// GitHub's messages about iat and exp.
			cause = "this machine's clock is likely off (GitHub checks the times in the App's token against its own)"
		}
		log.Error("GitHub refuses the App's credentials: "+cause+"; every delivery will fail until it is fixed",
			"app_id", appID, "github", api, "status", refused.Response.Status, "message", refused.Message)
	case errors.As(err, &refused) && refused.Response != nil && refused.Response.StatusCode == http.StatusNotFound:
		// The API root answers GET /app whatever the credentials (401 when
		// it refuses them): a 404 comes from elsewhere, such as a GitHub
		// Enterprise Server's web pages (its API is under /api/v3/).
		log.Error("could not check the App's credentials: GitHub answered 404 Not Found for GET /app; is LASTMILE_GITHUB_URL the REST API root, such as https://HOST/api/v3/ for GitHub Enterprise Server? Every delivery will fail until it is fixed",
			"app_id", appID, "github", api, "status", refused.Response.Status, "message", refused.Message)
	default:
		log.Warn("could not check the App's credentials with GitHub; going on", "app_id", appID, "github", api, "error", err)
	}
}
