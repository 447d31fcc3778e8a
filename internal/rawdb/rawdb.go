// Package rawdb hands tests the gorm handle behind a models.DB, for
// assertions and fault injection the storage layer does not offer. Only
// test code may use it: outside models/, production code reaches the
// database through models' operations alone.
package rawdb

import "gorm.io/gorm"

var of func(db any) *gorm.DB

// Register is called by package models, once.
func Register(f func(db any) *gorm.DB) { of = f }

// Gorm returns the gorm handle of db, a *models.DB.
func Gorm(db any) *gorm.DB { return of(db) }
