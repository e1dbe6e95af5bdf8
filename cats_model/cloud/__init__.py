"""Running the project on Modal: settings from modal.yml, and the bodies of the Modal functions."""
