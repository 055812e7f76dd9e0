module github.com/likeperson/portalsync/schema

go 1.26.8
