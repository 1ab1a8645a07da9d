package simulator

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// This file renders the simulator's objects as GitHub's JSON objects. The
// same renderers serve REST responses and webhook payloads, so both agree.

// obj is a JSON object under construction.
type obj = map[string]any

const (
	htmlRoot = "https://github.com"

	// GitHub Actions' own App and bot user (github-actions[bot]), with
	// their real ids.
	actionsAppID = 15368
	actionsBotID = 41898282
)

// ts formats a time as GitHub does: RFC 3339 in UTC, whole seconds.
func ts(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

// nodeID renders a legacy global node id, e.g. "MDEwOlJlcG9zaXRvcnkx" for
// Repository 1.
func nodeID(kind string, id int64) string {
	return base64.StdEncoding.EncodeToString([]byte("0" + strconv.Itoa(len(kind)) + ":" + kind + strconv.FormatInt(id, 10)))
}

// avatarURL is an account's avatar: an App's bot has its App's
// ("/in/<app id>", as renovate[bot]'s in GitHub's examples), others their
// own.
func avatarURL(a *account) string {
	if a.app != 0 {
		return fmt.Sprintf("https://avatars.githubusercontent.com/in/%d?v=4", a.app)
	}
	return fmt.Sprintf("https://avatars.githubusercontent.com/u/%d?v=4", a.id)
}

func (st *state) userJSON(a *account) obj {
	if a == nil {
		return nil
	}
	// A bot's login is escaped in its URLs, as in GitHub's examples:
	// ".../users/renovate%5Bbot%5D".
	api := st.apiURL + "/users/" + url.PathEscape(a.login)
	kind := "User"
	if a.typ == "Organization" {
		kind = "Organization"
	} else if a.typ == "Bot" {
		kind = "Bot"
	}
	u := obj{
		"login":               a.login,
		"id":                  a.id,
		"node_id":             nodeID(kind, a.id),
		"avatar_url":          avatarURL(a),
		"gravatar_id":         "",
		"url":                 api,
		"html_url":            htmlRoot + "/" + a.login,
		"followers_url":       api + "/followers",
		"following_url":       api + "/following{/other_user}",
		"gists_url":           api + "/gists{/gist_id}",
		"starred_url":         api + "/starred{/owner}{/repo}",
		"subscriptions_url":   api + "/subscriptions",
		"organizations_url":   api + "/orgs",
		"repos_url":           api + "/repos",
		"events_url":          api + "/events{/privacy}",
		"received_events_url": api + "/received_events",
		"type":                a.typ,
		"user_view_type":      "public",
		"site_admin":          false,
	}
	if a.typ == "Bot" {
		u["html_url"] = htmlRoot + "/apps/" + trimBot(a.login)
	}
	return u
}

func trimBot(login string) string {
	const suffix = "[bot]"
	if len(login) > len(suffix) && login[len(login)-len(suffix):] == suffix {
		return login[:len(login)-len(suffix)]
	}
	return login
}

// orgJSON renders an organization as webhooks carry it.
func (st *state) orgJSON(a *account) obj {
	api := st.apiURL + "/orgs/" + a.login
	return obj{
		"login":              a.login,
		"id":                 a.id,
		"node_id":            nodeID("Organization", a.id),
		"url":                api,
		"repos_url":          api + "/repos",
		"events_url":         api + "/events",
		"hooks_url":          api + "/hooks",
		"issues_url":         api + "/issues",
		"members_url":        api + "/members{/member}",
		"public_members_url": api + "/public_members{/member}",
		"avatar_url":         avatarURL(a),
		"description":        nil,
	}
}

func (st *state) appJSON(a *appInfo) obj {
	if a == nil {
		return nil
	}
	events := make([]any, len(a.events))
	for i, e := range a.events {
		events[i] = e
	}
	perms := obj{}
	for k, v := range a.permissions {
		perms[k] = v
	}
	created := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	return obj{
		"id":           a.id,
		"slug":         a.slug,
		"node_id":      nodeID("App", a.id),
		"client_id":    fmt.Sprintf("Iv1.%016x", a.id),
		"owner":        st.userJSON(a.owner),
		"name":         a.name,
		"description":  a.description,
		"external_url": htmlRoot + "/apps/" + a.slug,
		"html_url":     htmlRoot + "/apps/" + a.slug,
		"created_at":   ts(created),
		"updated_at":   ts(created),
		"permissions":  perms,
		"events":       events,
	}
}

// theApp is the simulated App itself.
func (st *state) theApp() *appInfo {
	o := st.s.opts
	return &appInfo{
		id:          o.AppID,
		slug:        o.AppSlug,
		name:        o.AppSlug,
		description: "GitHub App simulated by lastmile's githubapp/simulator",
		owner:       st.addAccount(o.AppSlug+"-owner", "Organization", 0),
		permissions: o.Permissions,
		// deployment_protection_rule is subscribed to as well, but GitHub's
		// schema of an App's events does not list it.
		events: []string{"deployment", "deployment_review", "deployment_status", "push", "status", "workflow_job", "workflow_run"},
	}
}

// appBot is the App's bot user, the actor of everything done with an
// installation token.
func (st *state) appBot() *account {
	return st.botOf(st.theApp(), 0)
}

// botOf returns app's bot user, "<slug>[bot]", with id (0: a fresh one).
func (st *state) botOf(app *appInfo, id int64) *account {
	a := st.addAccount(app.slug+"[bot]", "Bot", id)
	a.app = app.id
	return a
}

// actionsApp is GitHub Actions, which performs what GITHUB_TOKEN does.
func (st *state) actionsApp() *appInfo {
	return &appInfo{
		id:          actionsAppID,
		slug:        "github-actions",
		name:        "GitHub Actions",
		description: "Automate your workflow from idea to production",
		owner:       st.addAccount("github", "Organization", 9919),
		permissions: map[string]string{"actions": "write", "contents": "write", "deployments": "write", "metadata": "read", "statuses": "write"},
		events:      []string{"deployment", "deployment_status", "push", "status", "workflow_run"},
	}
}

func (st *state) actionsBot() *account {
	return st.botOf(st.actionsApp(), actionsBotID)
}

func (st *state) installationRef(r *repo) obj {
	return obj{"id": r.installation.id, "node_id": nodeID("IntegrationInstallation", r.installation.id)}
}

func (st *state) repoAPI(r *repo) string  { return st.apiURL + "/repos/" + r.fullName() }
func (st *state) repoHTML(r *repo) string { return htmlRoot + "/" + r.fullName() }

// repoJSON renders a full repository object. pushStyle renders it as the push
// webhook does (created_at and pushed_at as Unix seconds, plus stargazers and
// master_branch).
func (st *state) repoJSON(r *repo, pushStyle bool) obj {
	api := st.repoAPI(r)
	html := st.repoHTML(r)
	visibility := "public"
	if r.private {
		visibility = "private"
	}
	var pushed any
	if !r.pushedAt.IsZero() {
		pushed = ts(r.pushedAt)
	}
	o := obj{
		"id":                          r.id,
		"node_id":                     nodeID("Repository", r.id),
		"name":                        r.name,
		"full_name":                   r.fullName(),
		"private":                     r.private,
		"owner":                       st.userJSON(r.owner),
		"html_url":                    html,
		"description":                 nil,
		"fork":                        false,
		"url":                         api,
		"forks_url":                   api + "/forks",
		"keys_url":                    api + "/keys{/key_id}",
		"collaborators_url":           api + "/collaborators{/collaborator}",
		"teams_url":                   api + "/teams",
		"hooks_url":                   api + "/hooks",
		"issue_events_url":            api + "/issues/events{/number}",
		"events_url":                  api + "/events",
		"assignees_url":               api + "/assignees{/user}",
		"branches_url":                api + "/branches{/branch}",
		"tags_url":                    api + "/tags",
		"blobs_url":                   api + "/git/blobs{/sha}",
		"git_tags_url":                api + "/git/tags{/sha}",
		"git_refs_url":                api + "/git/refs{/sha}",
		"trees_url":                   api + "/git/trees{/sha}",
		"statuses_url":                api + "/statuses/{sha}",
		"languages_url":               api + "/languages",
		"stargazers_url":              api + "/stargazers",
		"contributors_url":            api + "/contributors",
		"subscribers_url":             api + "/subscribers",
		"subscription_url":            api + "/subscription",
		"commits_url":                 api + "/commits{/sha}",
		"git_commits_url":             api + "/git/commits{/sha}",
		"comments_url":                api + "/comments{/number}",
		"issue_comment_url":           api + "/issues/comments{/number}",
		"contents_url":                api + "/contents/{+path}",
		"compare_url":                 api + "/compare/{base}...{head}",
		"merges_url":                  api + "/merges",
		"archive_url":                 api + "/{archive_format}{/ref}",
		"downloads_url":               api + "/downloads",
		"issues_url":                  api + "/issues{/number}",
		"pulls_url":                   api + "/pulls{/number}",
		"milestones_url":              api + "/milestones{/number}",
		"notifications_url":           api + "/notifications{?since,all,participating}",
		"labels_url":                  api + "/labels{/name}",
		"releases_url":                api + "/releases{/id}",
		"deployments_url":             api + "/deployments",
		"created_at":                  ts(r.createdAt),
		"updated_at":                  ts(r.createdAt),
		"pushed_at":                   pushed,
		"git_url":                     "git://github.com/" + r.fullName() + ".git",
		"ssh_url":                     "git@github.com:" + r.fullName() + ".git",
		"clone_url":                   html + ".git",
		"svn_url":                     html,
		"homepage":                    nil,
		"size":                        0,
		"stargazers_count":            0,
		"watchers_count":              0,
		"language":                    "Go",
		"has_issues":                  true,
		"has_projects":                true,
		"has_downloads":               true,
		"has_wiki":                    true,
		"has_pages":                   false,
		"has_discussions":             false,
		"forks_count":                 0,
		"mirror_url":                  nil,
		"archived":                    false,
		"disabled":                    false,
		"open_issues_count":           0,
		"license":                     nil,
		"allow_forking":               true,
		"is_template":                 false,
		"web_commit_signoff_required": false,
		"topics":                      []any{},
		"custom_properties":           r.properties,
		"visibility":                  visibility,
		"forks":                       0,
		"open_issues":                 0,
		"watchers":                    0,
		"default_branch":              r.defaultBranch,
	}
	if pushStyle {
		o["created_at"] = r.createdAt.Unix()
		if !r.pushedAt.IsZero() {
			o["pushed_at"] = r.pushedAt.Unix()
		}
		o["stargazers"] = 0
		o["master_branch"] = r.defaultBranch
		if r.owner.typ == "Organization" {
			o["organization"] = r.owner.login
		}
	}
	return o
}

// eventBase returns the fields every webhook about r carries: repository,
// installation, sender and (for organization-owned repositories)
// organization.
func (st *state) eventBase(r *repo, sender *account) obj {
	o := obj{
		"repository":   st.repoJSON(r, false),
		"installation": st.installationRef(r),
		"sender":       st.userJSON(sender),
	}
	if r.owner.typ == "Organization" {
		o["organization"] = st.orgJSON(r.owner)
	}
	return o
}

func (st *state) deploymentJSON(r *repo, d *deployment) obj {
	url := st.repoAPI(r) + "/deployments/" + strconv.FormatInt(d.id, 10)
	var desc any
	if d.description != nil {
		desc = *d.description
	}
	return obj{
		"url":                      url,
		"id":                       d.id,
		"node_id":                  nodeID("Deployment", d.id),
		"sha":                      d.sha,
		"ref":                      d.ref,
		"task":                     d.task,
		"payload":                  d.payload,
		"original_environment":     d.originalEnvironment,
		"environment":              d.environment,
		"description":              desc,
		"creator":                  st.userJSON(d.creator),
		"created_at":               ts(d.createdAt),
		"updated_at":               ts(d.updatedAt),
		"statuses_url":             url + "/statuses",
		"repository_url":           st.repoAPI(r),
		"transient_environment":    d.transient,
		"production_environment":   d.production,
		"performed_via_github_app": st.appJSON(d.viaApp),
	}
}

func (st *state) deploymentStatusJSON(r *repo, d *deployment, ds *deploymentStatus) obj {
	durl := st.repoAPI(r) + "/deployments/" + strconv.FormatInt(d.id, 10)
	return obj{
		"url":                      durl + "/statuses/" + strconv.FormatInt(ds.id, 10),
		"id":                       ds.id,
		"node_id":                  nodeID("DeploymentStatus", ds.id),
		"state":                    ds.state,
		"creator":                  st.userJSON(ds.creator),
		"description":              ds.description,
		"environment":              ds.environment,
		"target_url":               ds.targetURL,
		"created_at":               ts(ds.createdAt),
		"updated_at":               ts(ds.createdAt),
		"deployment_url":           durl,
		"repository_url":           st.repoAPI(r),
		"performed_via_github_app": st.appJSON(ds.viaApp),
		// "" when unset, like target_url: the REST schema's default, and
		// what GitHub's Actions example of the webhook sends.
		"log_url":         ds.logURL,
		"environment_url": ds.environmentURL,
	}
}

func (st *state) commitStatusJSON(r *repo, cs *commitStatus) obj {
	var desc, target any
	if cs.description != nil {
		desc = *cs.description
	}
	if cs.targetURL != nil {
		target = *cs.targetURL
	}
	return obj{
		"url":         st.repoAPI(r) + "/statuses/" + cs.sha,
		"avatar_url":  avatarURL(cs.creator),
		"id":          cs.id,
		"node_id":     nodeID("StatusContext", cs.id),
		"state":       cs.state,
		"description": desc,
		"target_url":  target,
		"context":     cs.context,
		"created_at":  ts(cs.createdAt),
		"updated_at":  ts(cs.createdAt),
		"creator":     st.userJSON(cs.creator),
	}
}
