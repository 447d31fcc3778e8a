package vault

import "github.com/tokenwarm/tokenwarm/models"

// SetBeforeCommit installs a hook run before each commit of a refresh result.
func (v *Vault) SetBeforeCommit(fn func(attempt int, tx *models.Tx) error) { v.beforeCommit = fn }

// SetAfterLock installs a hook run right after the row lock is taken.
func (v *Vault) SetAfterLock(fn func(id string)) { v.afterLock = fn }

// SetBeforeRetry installs a hook run before each retry of a failed store.
func (v *Vault) SetBeforeRetry(fn func(attempt int)) { v.beforeRetry = fn }
