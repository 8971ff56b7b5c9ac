# hijaxc: no source for make.<locals>.step; threaded through closure cells without rewriting: v
