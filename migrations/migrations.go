// Package migrations embeds ingestd's PostgreSQL schema migrations, applied by
// `ingestd migrate` through goose.
package migrations

import "embed"

// FS holds the SQL migration files, named NNNNN_description.sql in goose's
// annotated format.
//
//go:embed *.sql
var FS embed.FS
