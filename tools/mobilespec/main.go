// Command mobilespec writes mobile-sdk-spec/openapi.mobile.yaml: openapi.yaml
// cut down to the operations tagged "mobile" and the components they reach,
// so that a client generated from it has no admin, metrics or callback
// operation. Run it from the repository root after changing openapi.yaml:
//
//	go run ./tools/mobilespec
//
// The output is deterministic (the source's order, comments and scalar
// styles are kept); TestMobileSpecUpToDate fails when the committed file is
// stale.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v4"
)

// Tag marks the operations the mobile spec keeps.
const Tag = "mobile"

// Command is how to regenerate the mobile spec, for messages.
const Command = "go run ./tools/mobilespec"

const header = "Code generated from openapi.yaml by `" + Command + "`. DO NOT EDIT.\n" +
	"The tokenwarm API for mobile apps: the operations of openapi.yaml tagged `mobile`, and what they use."

func main() {
	in := flag.String("in", "openapi.yaml", "the full contract")
	out := flag.String("out", "mobile-sdk-spec/openapi.mobile.yaml", "where to write the mobile spec")
	flag.Parse()
	src, err := os.ReadFile(*in)
	if err != nil {
		fail(err)
	}
	spec, err := Generate(src)
	if err != nil {
		fail(fmt.Errorf("%s: %w", *in, err))
	}
	if err := os.WriteFile(*out, spec, 0o644); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "mobilespec:", err)
	os.Exit(1)
}

var methods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// Generate returns the mobile spec of the OpenAPI document src.
func Generate(src []byte) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("not a YAML mapping")
	}
	root := doc.Content[0]
	paths := get(root, "paths")
	if paths == nil {
		return nil, errors.New("no paths")
	}

	kept := &yaml.Node{Kind: yaml.MappingNode}
	usedTags := map[string]bool{}
	schemes := map[string]bool{}
	var reach []*yaml.Node // subtrees whose $refs the mobile spec needs
	for i := 0; i+1 < len(paths.Content); i += 2 {
		item := paths.Content[i+1]
		out := &yaml.Node{Kind: yaml.MappingNode, Style: item.Style}
		nops := 0
		for j := 0; j+1 < len(item.Content); j += 2 {
			k, v := item.Content[j], item.Content[j+1]
			if slices.Contains(methods, k.Value) {
				tags := scalars(get(v, "tags"))
				if !slices.Contains(tags, Tag) {
					continue
				}
				for _, t := range tags {
					usedTags[t] = true
				}
				addSchemes(schemes, get(v, "security"))
				nops++
			}
			out.Content = append(out.Content, k, v)
			reach = append(reach, v)
		}
		if nops > 0 {
			kept.Content = append(kept.Content, paths.Content[i], out)
		}
	}
	if len(kept.Content) == 0 {
		return nil, fmt.Errorf("no operation is tagged %q", Tag)
	}
	set(root, "paths", kept)
	// Webhooks are sent to operators' servers, never to apps.
	del(root, "webhooks")
	del(root, "x-webhooks")
	addSchemes(schemes, get(root, "security"))

	if tags := get(root, "tags"); tags != nil {
		var keep []*yaml.Node
		for _, t := range tags.Content {
			if name := get(t, "name"); name != nil && usedTags[name.Value] {
				keep = append(keep, t)
			}
		}
		tags.Content = keep
	}

	comps := get(root, "components")
	if comps == nil {
		comps = &yaml.Node{Kind: yaml.MappingNode} // every $ref dangles
	}
	if err := pruneComponents(comps, reach, schemes); err != nil {
		return nil, err
	}

	if info := get(root, "info"); info != nil {
		if title := get(info, "title"); title != nil {
			title.Value += " (mobile)"
		}
	}
	doc.HeadComment = "# " + strings.ReplaceAll(header, "\n", "\n# ")
	root.HeadComment = ""

	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// pruneComponents keeps the components reached from the nodes of reach
// (following $refs through components) and the named security schemes.
func pruneComponents(comps *yaml.Node, reach []*yaml.Node, schemes map[string]bool) error {
	needed := map[string]bool{} // "schemas/Problem"
	queue := append([]*yaml.Node(nil), reach...)
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		var refs []string
		collectRefs(n, &refs)
		for _, ref := range refs {
			name, ok := strings.CutPrefix(ref, "#/components/")
			if !ok {
				return fmt.Errorf("unsupported $ref %q (only #/components/… refs)", ref)
			}
			if needed[name] {
				continue
			}
			kind, key, ok := strings.Cut(name, "/")
			target := get(get(comps, kind), key)
			if !ok || target == nil {
				return fmt.Errorf("$ref %q: no such component", ref)
			}
			needed[name] = true
			queue = append(queue, target)
		}
	}
	for name := range schemes {
		needed["securitySchemes/"+name] = true
	}
	var keepKinds []*yaml.Node
	for i := 0; i+1 < len(comps.Content); i += 2 {
		kind, section := comps.Content[i], comps.Content[i+1]
		var keep []*yaml.Node
		for j := 0; j+1 < len(section.Content); j += 2 {
			if needed[kind.Value+"/"+section.Content[j].Value] {
				keep = append(keep, section.Content[j], section.Content[j+1])
			}
		}
		if len(keep) > 0 {
			section.Content = keep
			keepKinds = append(keepKinds, kind, section)
		}
	}
	comps.Content = keepKinds
	return nil
}

func collectRefs(n *yaml.Node, refs *[]string) {
	if n == nil {
		return
	}
	if n.Kind == yaml.AliasNode {
		collectRefs(n.Alias, refs)
		return
	}
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "$ref" && n.Content[i+1].Kind == yaml.ScalarNode {
				*refs = append(*refs, n.Content[i+1].Value)
			}
		}
	}
	for _, c := range n.Content {
		collectRefs(c, refs)
	}
}

// addSchemes adds the scheme names of a security requirement list.
func addSchemes(schemes map[string]bool, security *yaml.Node) {
	if security == nil {
		return
	}
	for _, req := range security.Content {
		for n := 0; n+1 < len(req.Content); n += 2 {
			schemes[req.Content[n].Value] = true
		}
	}
}

// get returns the value of key in mapping m, or nil.
func get(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func set(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
}

// del removes key from mapping m.
func del(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}

func scalars(n *yaml.Node) []string {
	if n == nil {
		return nil
	}
	var out []string
	for _, c := range n.Content {
		out = append(out, c.Value)
	}
	return out
}
