module flotilla/spdy-go-interop

go 1.19
