module github.com/likeperson/portalsync/e2e

go 1.26.8
