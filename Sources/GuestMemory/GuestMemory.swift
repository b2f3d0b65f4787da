// GuestMemory: see Package.swift for this target's job.
