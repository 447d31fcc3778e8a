package emulator

import (
	"bytes"
	"html/template"
	"net/http"
)

type field struct{ Name, Value string }

type consentPage struct {
	Action   string
	ClientID string
	Scope    string
	Username string
	Hidden   []field
}

var consentTmpl = template.Must(template.New("consent").Parse(`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Allow access?</title></head>
<body>
<h1>Salesforce emulator</h1>
<p>The app <strong>{{.ClientID}}</strong> asks for access{{with .Scope}} (<code>{{.}}</code>){{end}}.</p>
<form method="post" action="{{.Action}}">
{{range .Hidden}}<input type="hidden" name="{{.Name}}" value="{{.Value}}">
{{end}}<label>Username <input name="username" value="{{.Username}}" autocomplete="username"></label>
<button type="submit" name="action" value="allow">Allow</button>
<button type="submit" name="action" value="deny">Deny</button>
</form>
</body>
</html>
`))

type errorPage struct{ Code, Description string }

var errorTmpl = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Authorization error</title></head>
<body>
<h1>Authorization error</h1>
<p>error={{.Code}}</p>
<p>{{.Description}}</p>
</body>
</html>
`))

// renderError answers an authorize request that cannot be redirected.
func renderError(w http.ResponseWriter, code, description string) {
	renderHTML(w, http.StatusBadRequest, errorTmpl, errorPage{code, description})
}

func renderHTML(w http.ResponseWriter, status int, t *template.Template, data any) {
	// Render first so a template error is a clean 500, not half a page.
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		http.Error(w, "template error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}
