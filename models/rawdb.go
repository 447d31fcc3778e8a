package models

import (
	"gorm.io/gorm"

	"github.com/tokenwarm/tokenwarm/internal/rawdb"
)

// Tests reach the gorm handle through internal/rawdb; nothing else can.
func init() {
	rawdb.Register(func(db any) *gorm.DB { return db.(*DB).gorm })
}
