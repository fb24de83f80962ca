#include "agent/devices/device_manager.h"

namespace smad::agent {

sma::GetQosCapabilitiesResponse::QosCapabilities BdevQosCapabilities() {
  sma::GetQosCapabilitiesResponse::QosCapabilities caps;
  caps.set_rw_iops(true);
  caps.set_rd_bandwidth(true);
  caps.set_wr_bandwidth(true);
  caps.set_rw_bandwidth(true);
  return caps;
}

}  // namespace smad::agent
