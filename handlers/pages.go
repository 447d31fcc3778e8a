package handlers

import "html/template"

// pages are the few server-rendered pages of the flow and the demo. Their
// Content-Security-Policy (renderPage) allows no script at all.
var pages = template.Must(template.New("pages").Parse(`{{define "head"}}<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>tokenwarm</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;line-height:1.5}code{background:#f2f2f2;padding:0 .2em}.err{color:#a00}.ok{color:#070}</style></head><body>{{end}}
{{define "done"}}{{template "head"}}
{{if .Error}}<h1 class="err">Sign-in did not complete</h1><p><code>{{.Error}}</code> {{.Description}}</p>
{{else if .Reauth}}<h1 class="ok">Connection re-authorized</h1><p>The connection works again. You can close this window.</p>
{{else}}<h1 class="ok">Connected</h1><p>You can close this window.</p>{{end}}
</body></html>{{end}}
{{define "demo"}}{{template "head"}}
<h1>tokenwarm demo</h1>
<p>This server runs with no configuration: an embedded SQLite database, a generated development key, and a built-in Salesforce emulator standing in for Salesforce.</p>
<p>The button plays a mobile app: it opens <code>/v1/oauth/authorize</code> with its own PKCE challenge, you approve at the emulator's login page, tokenwarm exchanges the code and keeps the refresh token sealed, and the app receives a one-time handoff code that it trades for a device session.</p>
<p><a href="{{.Start}}">Connect a (pretend) Salesforce org</a></p>
</body></html>{{end}}
{{define "demodone"}}{{template "head"}}
{{if .Error}}<h1 class="err">The demo flow failed</h1><p><code>{{.Error}}</code> {{.Description}}</p><p><a href="/">Start again</a></p>
{{else}}<h1 class="ok">Handoff received</h1>
<p>The app got the handoff code <code>{{.HandoffCode}}</code>, redeemed it with its PKCE verifier, and pulled a Salesforce access token through tokenwarm.</p>
<ul><li>connection <code>{{.ConnectionID}}</code></li><li>Salesforce user <code>{{.Owner}}</code></li><li>access token <code>{{.AccessToken}}</code>, valid until {{.ExpiresAt}}</li><li>instance <code>{{.InstanceURL}}</code></li></ul>
<p>The refresh token never left the server. <a href="/">Connect again</a></p>{{end}}
</body></html>{{end}}
`))
