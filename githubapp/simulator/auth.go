package simulator

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// AuthKind says how a request authenticated.
type AuthKind string

// Authentication kinds.
const (
	AuthNone         AuthKind = "none"
	AuthApp          AuthKind = "app"          // the App's JWT
	AuthInstallation AuthKind = "installation" // an installation token
	AuthWorkflow     AuthKind = "workflow"     // a workflow run's GITHUB_TOKEN
)

// tokenTTL is how long installation tokens live: "expire after 1 hour".
const tokenTTL = time.Hour

// authNeed is what an endpoint requires: nothing, the App's JWT, or a
// token with a repository permission.
type authNeed struct {
	app   bool
	perm  string // the repository permission, for repository endpoints
	write bool   // write access to it; else read (or write)
}

var (
	needNone = authNeed{}
	needApp  = authNeed{app: true}
)

// needRead and needWrite are what a repository endpoint requires: a token
// granted perm, at least read, or write.
func needRead(perm string) authNeed  { return authNeed{perm: perm} }
func needWrite(perm string) authNeed { return authNeed{perm: perm, write: true} }

// allows reports whether the token's permissions grant need.
func (t *token) allows(need authNeed) bool {
	switch t.permissions[need.perm] {
	case "write":
		return true
	case "read":
		return !need.write
	}
	return false
}

type auth struct {
	kind           AuthKind
	err            string // 401 message when the credentials are bad
	unreplicated   bool   // the token is too new for the API to know it (SetTokenLag)
	tok            *token
	installationID int64
	remote         string
}

// token is an installation token or a workflow token.
type token struct {
	value          string
	kind           AuthKind
	installationID int64
	repos          []*repo // nil: every repository of the installation
	permissions    map[string]string
	expiresAt      time.Time
	knownAt        time.Time // before it, the API does not know the token yet (SetTokenLag)
	revoked        bool
	run            *run // workflow tokens
}

// newTokenValue mints an installation token of GitHub App appID in the
// stateless format GitHub has minted since April 2026 — "ghs_APPID_JWT"
// (@octokit/openapi, create an installation access token: "If your
// application expects or relies on installation tokens being exactly 40
// characters long, it may not handle this new token format correctly") —
// so that what reads lastmile's credentials meets two dots in a token, as
// in an App's JWT. Its claims are opaque here: the simulator looks tokens
// up, it does not verify them.
func newTokenValue(appID int64) string {
	nonce := make([]byte, 24)
	_, _ = rand.Read(nonce)
	sig := make([]byte, 32)
	_, _ = rand.Read(sig)
	enc := base64.RawURLEncoding
	header := enc.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`))
	claims := enc.EncodeToString([]byte(fmt.Sprintf(`{"iss":%d,"jti":%q}`, appID, enc.EncodeToString(nonce))))
	return fmt.Sprintf("ghs_%d_%s.%s.%s", appID, header, claims, enc.EncodeToString(sig))
}

// authenticate reads the Authorization header. Call with s.mu held.
func (s *Simulator) authenticate(r *http.Request) *auth {
	a := &auth{kind: AuthNone, remote: r.RemoteAddr}
	if host, _, ok := strings.Cut(r.RemoteAddr, ":"); ok {
		a.remote = host
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return a
	}
	scheme, cred, _ := strings.Cut(h, " ")
	cred = strings.TrimSpace(cred)
	switch strings.ToLower(scheme) {
	case "bearer", "token":
	default:
		a.err = "Bad credentials"
		return a
	}
	if !strings.HasPrefix(cred, "ghs_") && strings.Count(cred, ".") == 2 {
		if msg := s.verifyJWT(cred); msg != "" {
			a.err = msg
			return a
		}
		a.kind = AuthApp
		return a
	}
	t := s.st.tokens[cred]
	if t == nil || t.revoked || !s.clock().Before(t.expiresAt) {
		a.err = "Bad credentials"
		return a
	}
	if s.clock().Before(t.knownAt) {
		a.err, a.unreplicated = "Bad credentials", true
		return a
	}
	a.kind, a.tok, a.installationID = t.kind, t, t.installationID
	return a
}

// verifyJWT checks an App JWT the way GitHub does and returns GitHub's
// message for what is wrong, or "".
func (s *Simulator) verifyJWT(raw string) string {
	const undecodable = "A JSON web token could not be decoded"
	parts := strings.Split(raw, ".")
	hb, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	cb, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	sig, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return undecodable
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(hb, &header) != nil || header.Alg != "RS256" {
		return undecodable
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if rsa.VerifyPKCS1v15(&s.key.PublicKey, crypto.SHA256, digest[:], sig) != nil {
		return undecodable
	}
	var claims map[string]json.RawMessage
	if json.Unmarshal(cb, &claims) != nil {
		return undecodable
	}
	intClaim := func(name string) (int64, bool) {
		raw, ok := claims[name]
		if !ok {
			return 0, false
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var n json.Number
		if dec.Decode(&n) != nil {
			// ghinstallation sends iss as a string; GitHub accepts both.
			var str string
			if json.Unmarshal(raw, &str) != nil {
				return 0, false
			}
			n = json.Number(str)
		}
		v, err := n.Int64()
		return v, err == nil
	}
	now := s.clock().Unix()
	iat, ok := intClaim("iat")
	if !ok {
		return "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"
	}
	if iat > now {
		return "'Issued at' claim ('iat') must be an Integer representing a time in the past"
	}
	exp, ok := intClaim("exp")
	if !ok || exp <= now {
		return "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires"
	}
	if exp > now+600 || exp-iat > 600+60 {
		return "'Expiration time' claim ('exp') is too far in the future"
	}
	iss, ok := intClaim("iss")
	if !ok || iss != s.opts.AppID {
		return "Integration not found"
	}
	return ""
}

// authorize checks that the caller may use the endpoint and, for repository
// endpoints, sees the repository and is granted the permission the
// endpoint needs, reads included (GitHub's 403 "Resource not accessible by
// integration" otherwise). It writes the error answer and returns false if
// not.
func (s *Simulator) authorize(w http.ResponseWriter, r *http.Request, need authNeed, a *auth) bool {
	switch {
	case need == needNone:
		return true
	case need.app:
		if a.kind != AuthApp {
			writeError(w, http.StatusUnauthorized, "A JSON web token could not be decoded", docsRoot)
			return false
		}
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.st.lookupRepo(r.PathValue("owner") + "/" + r.PathValue("repo"))
	switch a.kind {
	case AuthApp:
		writeError(w, http.StatusForbidden, "Resource not accessible by integration", docsRoot)
		return false
	case AuthNone:
		if rp == nil || rp.private {
			writeError(w, http.StatusNotFound, "Not Found", docsRoot)
			return false
		}
		if need.write {
			writeError(w, http.StatusUnauthorized, "Requires authentication", docsRoot)
			return false
		}
		return true
	}
	if inst := s.st.installations[a.installationID]; a.kind == AuthInstallation && inst != nil && inst.suspendedBy != nil {
		writeError(w, http.StatusForbidden, suspendedMessage, docsRoot)
		return false
	}
	if rp == nil || !a.tok.canSee(rp) {
		writeError(w, http.StatusNotFound, "Not Found", docsRoot)
		return false
	}
	if !a.tok.allows(need) {
		writeError(w, http.StatusForbidden, "Resource not accessible by integration", docsRoot)
		return false
	}
	return true
}

func (t *token) canSee(r *repo) bool {
	if r.installation.id != t.installationID {
		return false
	}
	if t.kind == AuthInstallation && !r.installation.has(r) {
		return false // removed from the installation since
	}
	if t.repos == nil {
		return true
	}
	for _, x := range t.repos {
		if x == r {
			return true
		}
	}
	return false
}

// handleCreateToken serves POST /app/installations/{id}/access_tokens.
func (s *Simulator) handleCreateToken(w http.ResponseWriter, r *http.Request, a *auth) {
	const doc = docsRoot + "/apps/apps#create-an-installation-access-token-for-an-app"
	id, _ := pathID(r, "installation_id")
	var body struct {
		Repositories  []string          `json:"repositories"`
		RepositoryIDs []int64           `json:"repository_ids"`
		Permissions   map[string]string `json:"permissions"`
	}
	if r.ContentLength != 0 {
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&body); err != nil && err.Error() != "EOF" {
			writeError(w, http.StatusBadRequest, "Problems parsing JSON", doc)
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.st.installations[id]
	if inst == nil || inst.deleted {
		writeError(w, http.StatusNotFound, "Not Found", doc)
		return
	}
	if inst.suspendedBy != nil {
		writeError(w, http.StatusForbidden, suspendedMessage, doc)
		return
	}
	t := &token{
		value:          newTokenValue(s.opts.AppID),
		kind:           AuthInstallation,
		installationID: id,
		permissions:    map[string]string{},
		expiresAt:      s.clock().Add(tokenTTL).Truncate(time.Second),
	}
	if s.st.tokenLag > 0 {
		t.knownAt = s.clock().Add(s.st.tokenLag)
	}
	for k, v := range s.opts.Permissions {
		t.permissions[k] = v
	}
	for k, v := range body.Permissions {
		if have, ok := s.opts.Permissions[k]; !ok || (have == "read" && v == "write") {
			writeValidation(w, "The permissions requested are not granted to this installation.", doc)
			return
		}
	}
	if len(body.Permissions) > 0 {
		t.permissions = body.Permissions
		t.permissions["metadata"] = "read"
	}
	if len(body.Repositories) > 0 || len(body.RepositoryIDs) > 0 {
		t.repos = []*repo{}
		for _, rp := range inst.repos {
			for _, n := range body.Repositories {
				if strings.EqualFold(n, rp.name) {
					t.repos = append(t.repos, rp)
				}
			}
			for _, rid := range body.RepositoryIDs {
				if rid == rp.id {
					t.repos = append(t.repos, rp)
				}
			}
		}
		if len(t.repos) != len(body.Repositories)+len(body.RepositoryIDs) {
			writeValidation(w, "There is at least one repository that does not exist or is not accessible to the parent installation.", doc)
			return
		}
	}
	s.st.tokens[t.value] = t
	perms := obj{}
	for k, v := range t.permissions {
		perms[k] = v
	}
	out := obj{
		"token":                t.value,
		"expires_at":           ts(t.expiresAt),
		"permissions":          perms,
		"repository_selection": "all",
	}
	if t.repos != nil {
		out["repository_selection"] = "selected"
		list := make([]any, len(t.repos))
		for i, rp := range t.repos {
			list[i] = s.st.repoJSON(rp, false)
		}
		out["repositories"] = list
	}
	s.notifyLocked()
	writeJSON(w, http.StatusCreated, out)
}

// newWorkflowToken mints a GITHUB_TOKEN for a run: this repository only,
// deployments and statuses write. Call with s.mu held.
func (st *state) newWorkflowToken(r *repo, ru *run) *token {
	t := &token{
		value:          newTokenValue(actionsAppID),
		kind:           AuthWorkflow,
		installationID: r.installation.id,
		repos:          []*repo{r},
		permissions:    map[string]string{"actions": "read", "contents": "read", "deployments": "write", "metadata": "read", "statuses": "write"},
		expiresAt:      st.s.clock().Add(24 * time.Hour),
		run:            ru,
	}
	st.tokens[t.value] = t
	return t
}

// SetTokenLag makes the installation tokens issued from now on unknown to
// the API for d after they are issued (0: known at once, the default), as
// GitHub's replicas may not know a token they were just given (octokit's
// handbook, on the replication lag after creating an installation token:
// a 404 to GET and HEAD, or the credentials refused; @octokit/auth-app
// retries a 401 for five seconds after creating a token). A call with
// such a token is answered 404 Not Found for GET and HEAD, 401 Bad
// credentials for the rest.
func (s *Simulator) SetTokenLag(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.tokenLag = d
}

// ExpireTokens makes every installation token issued so far expire now, as
// if an hour had passed.
func (s *Simulator) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.st.tokens {
		if t.kind == AuthInstallation {
			t.expiresAt = s.clock()
		}
	}
	s.notifyLocked()
}
