"""The landmark method: replay the nearest demonstration on the path the demonstrations take through this scene, learned from where the things seen at the start (the landmarks) stand."""
