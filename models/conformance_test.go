package models_test

import (
	"testing"

	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
)

// storageCase is one behaviour of the storage layer. Every case runs on
// every dialect, each on a fresh migrated database: the storage layer is
// one contract with two implementations (in the spirit of dex's storage
// conformance tests).
type storageCase struct {
	name string
	run  func(t *testing.T, db *models.DB)
}

// storageCases is the table; each area's file registers its cases in init.
var storageCases []storageCase

func register(cs ...storageCase) { storageCases = append(storageCases, cs...) }

func TestStorageConformance(t *testing.T) {
	testkit.Dialects(t, func(t *testing.T, dialect models.Dialect) {
		for _, c := range storageCases {
			t.Run(c.name, func(t *testing.T) { c.run(t, testkit.MigratedDB(t, dialect)) })
		}
	})
}
