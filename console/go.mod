module github.com/likeperson/portalsync/console

go 1.26.8

require (
	github.com/MicahParks/keyfunc/v3 v3.9.2
	github.com/alecthomas/kong v1.17.0
	github.com/golang-jwt/jwt/v5 v5.3.1
	github.com/jackc/pgx/v5 v5.12.0
	github.com/likeperson/portalsync/pkg v0.0.0
	github.com/likeperson/portalsync/testkit v0.0.0
	github.com/stretchr/testify v1.12.1
	go.uber.org/zap v1.28.0
	golang.org/x/text v0.44.0
)

require (
	github.com/MicahParks/jwkset v0.11.4 // indirect
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/puddle/v2 v2.2.3 // indirect
	go.uber.org/multierr v1.11.0 // indirect
	go.yaml.in/yaml/v3 v3.0.6 // indirect
	golang.org/x/sync v0.25.0 // indirect
	golang.org/x/time v0.16.0 // indirect
)

replace github.com/likeperson/portalsync/pkg => ../pkg

replace github.com/likeperson/portalsync/schema => ../schema

replace github.com/likeperson/portalsync/testkit => ../testkit
