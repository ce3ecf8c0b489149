"""Static files of the fleet console (a package only so the wheel ships them)."""
