module github.com/likeperson/portalsync/syncer

go 1.26.8

require (
	github.com/jackc/pgx/v5 v5.12.0
	github.com/likeperson/portalsync/pkg v0.0.0
	github.com/likeperson/portalsync/schema v0.0.0-00010101000000-000000000000
	github.com/nats-io/nats.go v1.55.0
	go.uber.org/zap v1.28.0
)

require (
	github.com/alecthomas/kong v1.17.0 // indirect
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/puddle/v2 v2.2.3 // indirect
	github.com/klauspost/compress v1.20.4 // indirect
	github.com/mfridman/interpolate v0.0.2 // indirect
	github.com/nats-io/nkeys v0.4.16 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	github.com/pressly/goose/v3 v3.30.0 // indirect
	github.com/sethvargo/go-retry v0.5.0 // indirect
	go.uber.org/multierr v1.11.0 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sync v0.25.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/text v0.44.0 // indirect
)

replace github.com/likeperson/portalsync/pkg => ../pkg

replace github.com/likeperson/portalsync/schema => ../schema
