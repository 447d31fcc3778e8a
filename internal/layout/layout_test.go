// Package layout holds the test that keeps the package structure as
// docs/ARCHITECTURE.md describes it.
package layout

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/tokenwarm/tokenwarm/"

// file is one non-test Go file of the module.
type file struct {
	pkg  string // directory relative to the module root, slash-separated
	path string
	ast  *ast.File
}

func sources(t *testing.T) []file {
	t.Helper()
	root := filepath.Join("..", "..")
	var out []file
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || name == "node_modules" || name == "data" || name == "artifacts") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		out = append(out, file{pkg: filepath.ToSlash(rel), path: path, ast: f})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 50 {
		t.Fatalf("found only %d source files; is the walk rooted right?", len(out))
	}
	return out
}

func under(pkg string, dirs ...string) bool {
	for _, d := range dirs {
		if pkg == d || strings.HasPrefix(pkg, d+"/") {
			return true
		}
	}
	return false
}

func imports(f file) []string {
	var out []string
	for _, imp := range f.ast.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		out = append(out, p)
	}
	return out
}

// The storage layer is models/: no other package (but the wiring in
// cmd/server, and test helpers under internal/) imports gorm or reaches a
// gorm handle.
func TestOnlyModelsTalksToTheDatabase(t *testing.T) {
	for _, f := range sources(t) {
		if under(f.pkg, "models", "cmd/server", "internal") {
			continue
		}
		for _, p := range imports(f) {
			if strings.HasPrefix(p, "gorm.io/") {
				t.Errorf("%s imports %s: queries belong in models/", f.path, p)
			}
		}
		ast.Inspect(f.ast, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok && sel.Sel.Name == "Gorm" {
				t.Errorf("%s reaches a gorm handle (.Gorm): queries belong in models/", f.path)
			}
			return true
		})
	}
}

// HTTP is decided in handlers/, which works with domain packages, never
// with the storage layer's records.
func TestHandlersDoNotImportModels(t *testing.T) {
	for _, f := range sources(t) {
		if !under(f.pkg, "handlers") {
			continue
		}
		for _, p := range imports(f) {
			if p == module+"models" {
				t.Errorf("%s imports models: handlers work with the domain packages' types", f.path)
			}
		}
	}
}

// Only salesforce/ presents anything to Salesforce's token endpoint (the
// emulator serves it).
func TestOnlySalesforceCallsTheTokenEndpoint(t *testing.T) {
	for _, f := range sources(t) {
		if under(f.pkg, "salesforce", "emulator") {
			continue
		}
		ast.Inspect(f.ast, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				s, _ := strconv.Unquote(lit.Value)
				if strings.Contains(s, "/services/oauth2/token") || strings.Contains(s, "grant_type=refresh_token") {
					t.Errorf("%s names Salesforce's token endpoint: only salesforce/ may call it", f.path)
				}
			}
			return true
		})
	}
}

// No public signature carries a *gorm.DB: exported functions, methods and
// struct fields of packages other than cmd/server and internal/ are
// checked, models included (its callers must not reach gorm through it).
func TestNoGormInPublicSignatures(t *testing.T) {
	for _, f := range sources(t) {
		if under(f.pkg, "cmd", "internal") {
			continue
		}
		gormName := ""
		for _, imp := range f.ast.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if p == "gorm.io/gorm" {
				gormName = "gorm"
				if imp.Name != nil {
					gormName = imp.Name.Name
				}
			}
		}
		if gormName == "" {
			continue
		}
		mentions := func(n ast.Node) bool {
			found := false
			ast.Inspect(n, func(n ast.Node) bool {
				if sel, ok := n.(*ast.SelectorExpr); ok {
					if id, ok := sel.X.(*ast.Ident); ok && id.Name == gormName && sel.Sel.Name == "DB" {
						found = true
					}
				}
				return !found
			})
			return found
		}
		for _, d := range f.ast.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Name.IsExported() && receiverExported(d) && mentions(d.Type) {
					t.Errorf("%s: %s has a *gorm.DB in its signature", f.path, d.Name.Name)
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					ts, ok := s.(*ast.TypeSpec)
					if !ok || !ts.Name.IsExported() {
						continue
					}
					st, ok := ts.Type.(*ast.StructType)
					if !ok {
						if mentions(ts.Type) {
							t.Errorf("%s: type %s mentions *gorm.DB", f.path, ts.Name.Name)
						}
						continue
					}
					for _, fld := range st.Fields.List {
						for _, n := range fld.Names {
							if n.IsExported() && mentions(fld.Type) {
								t.Errorf("%s: %s.%s is a *gorm.DB", f.path, ts.Name.Name, n.Name)
							}
						}
					}
				}
			}
		}
	}
}

func receiverExported(d *ast.FuncDecl) bool {
	if d.Recv == nil || len(d.Recv.List) == 0 {
		return true
	}
	typ := d.Recv.List[0].Type
	if star, ok := typ.(*ast.StarExpr); ok {
		typ = star.X
	}
	if idx, ok := typ.(*ast.IndexExpr); ok {
		typ = idx.X
	}
	id, ok := typ.(*ast.Ident)
	return ok && id.IsExported()
}

// The checks above must see the tree: a wrong root would pass vacuously.
func TestLayoutSeesTheTree(t *testing.T) {
	if _, err := os.Stat(filepath.Join("..", "..", "go.mod")); err != nil {
		t.Fatal("not at the module root:", err)
	}
	seen := map[string]bool{}
	for _, f := range sources(t) {
		seen[f.pkg] = true
	}
	for _, p := range []string{"models", "vault", "handlers", "salesforce", "warmer"} {
		if !seen[p] {
			t.Errorf("package %s not seen", p)
		}
	}
}
