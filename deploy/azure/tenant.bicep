// Per-tenant resources of skycrawl on Azure, deployed by adapters/azure/provisioner.py
// (ArmProvisioner) as the deployment "skycrawl-tenant-<tenant>-<hash>" in the shared
// resource group. The provisioner deploys tenant.json, the compiled form of this file:
// after editing, run `az bicep build --file tenant.bicep --outfile tenant.json` (the test
// tests/integration/azure/test_templates.py checks that the two declare the same
// parameters, resources and outputs).
//
// Everything lives in the shared storage account (and, optionally, the shared Service Bus
// namespace): an empty table, container or queue costs nothing.

@description('The skycrawl tenant id (recorded in the container metadata).')
param tenantId string

@description('The shared storage account of the deployment.')
param storageAccountName string

@description('The tenant\'s table (its database); alphanumeric, 3-63 characters.')
param tableName string

@description('The tenant\'s blob container (its results).')
param containerName string

@description('The tenant\'s queue.')
param queueName string

@description('Service Bus namespace name for the tenant queue; empty: a Storage queue.')
param serviceBusNamespaceName string = ''

var useServiceBus = !empty(serviceBusNamespaceName)

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource table 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: tableName
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
    metadata: {
      skycrawltenant: tenantId
    }
  }
}

resource storageQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = if (!useServiceBus) {
  parent: queueService
  name: queueName
  properties: {
    metadata: {
      skycrawltenant: tenantId
    }
  }
}

resource namespace 'Microsoft.ServiceBus/namespaces@2021-11-01' existing = if (useServiceBus) {
  name: serviceBusNamespaceName
}

resource serviceBusQueue 'Microsoft.ServiceBus/namespaces/queues@2021-11-01' = if (useServiceBus) {
  parent: namespace
  name: queueName
  properties: {
    maxDeliveryCount: 5
    lockDuration: 'PT1M'
    deadLetteringOnMessageExpiration: true
  }
}

output tableName string = tableName
output tableId string = table.id
output containerName string = containerName
output containerId string = container.id
output queueName string = queueName
output queueId string = useServiceBus ? serviceBusQueue.id : storageQueue.id
