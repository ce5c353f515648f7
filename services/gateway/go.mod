module github.com/fnhook/fnhook/services/gateway

go 1.26.7

require github.com/fnhook/fnhook/libs v0.0.0

replace github.com/fnhook/fnhook/libs => ../../libs
