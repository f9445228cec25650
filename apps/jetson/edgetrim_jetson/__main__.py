from edgetrim_jetson.app import entry

entry()
