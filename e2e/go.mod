module github.com/fnhook/fnhook/e2e

go 1.26.7

require github.com/fnhook/fnhook/libs v0.0.0

require github.com/compose-spec/compose-go/v2 v2.16.2 // indirect

replace github.com/fnhook/fnhook/libs => ../libs
