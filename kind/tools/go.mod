module dnscorrelate.local/kind/tools

go 1.24.0
