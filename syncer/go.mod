module github.com/likeperson/portalsync/syncer

go 1.26.8
