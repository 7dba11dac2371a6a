# frozen_string_literal: true

module Numo
  module Shared
    # The gem's version.
    VERSION = "0.1.0"
  end
end
