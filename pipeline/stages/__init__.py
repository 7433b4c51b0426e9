"""The stages dvc.yaml runs, one module each: parse the arguments, load params, call libraries, write outputs, record."""
